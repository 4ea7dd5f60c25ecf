"""Parameter counts of the paper preset, built from configs alone on the meta device, against
the published model sizes; trainable counts against the build rules; `config show --params`."""
import json
import subprocess
import sys
import time

import pytest
import torch

from vlv_ray.config import load_job
from vlv_ray.models.params import DECODER_PARTS, ENCODER_PARTS, count_parts, param_counts
from vlv_ray.models.presets import build_stage1, paper_configs_for

from helpers import JOBS, REPO

FLORENCE_PARTS = ("vision_tower", "vision_projector", "token_embeddings", "language_encoder", "language_decoder")
LANGUAGE_PARTS = ("token_embeddings", "language_encoder", "language_decoder")


def job(name, *overrides):
    return load_job(JOBS / name, list(overrides))


def within(got, published, rel=0.01):
    return abs(got - published) <= rel * published


@pytest.fixture(scope="module")
def paper():
    start = time.perf_counter()
    counts = {1: param_counts(job("stage1-paper.yaml")), 2: param_counts(job("stage2-paper.yaml"))}
    return counts, time.perf_counter() - start


def total(counts, *names):
    return sum(counts["modules"][n]["total"] for n in names)


def trainable(counts, *names):
    return sum(counts["modules"][n]["trainable"] for n in names)


# ---------------------------------------------------------------------------- published sizes


def test_florence2_large_is_0_77b(paper):
    # microsoft/Florence-2-large model card: "Florence-2-large 0.77B". Measured here:
    # 770,213,888 (vision tower 360.6M + projector 2.2M + BART-large-shaped language model
    # 407.4M, lm_head tied to the token embeddings; vocabulary 51,328 as converted for
    # transformers: 51,289 + <image>, padded to 64).
    c = paper[0][1]
    assert total(c, *FLORENCE_PARTS) == 770_213_888
    assert within(total(c, *FLORENCE_PARTS), 0.77e9)


def test_florence2_base_is_0_23b():
    # Same model card: "Florence-2-base 0.23B" (a check of the shared config mapping).
    from transformers import Florence2ForConditionalGeneration

    cfg = paper_configs_for(florence="microsoft/Florence-2-base")["florence"][0]
    with torch.device("meta"):
        n = sum(p.numel() for p in Florence2ForConditionalGeneration(cfg).parameters())
    assert within(n, 0.23e9)


def test_sd21_base_unet_vae_and_text_encoder(paper):
    m = paper[0][1]["modules"]
    # SDXL paper (Podell et al. 2023, arXiv 2307.01952), Table 1: SD 2.0/2.1 UNet 865M.
    # Measured 865,910,724.
    assert m["unet"]["total"] == 865_910_724 and within(m["unet"]["total"], 865.9e6)
    # SD 2.x KL-f8 VAE: 83,653,863 (its fp32 diffusion_pytorch_model.safetensors is ≈335 MB).
    assert m["vae"]["total"] == 83_653_863 and within(m["vae"]["total"], 83.65e6)
    # OpenCLIP ViT-H-14's text tower is 354.03M (open_clip model_profile.csv, text_mparams);
    # SD 2's CLIPTextModel keeps 23 of its 24 layers and drops the text projection:
    # 354.03M − one layer (12,596,224) − projection (1024 × 1024) = 340,387,840.
    te = m["text_encoder"]["total"]
    assert te == 340_387_840 and within(te, 340e6)
    layer = 4 * (1024 * 1024 + 1024) + (1024 * 4096 + 4096) + (4096 * 1024 + 1024) + 2 * 2 * 1024
    assert within(te + layer + 1024 * 1024, 354.03e6, rel=0.001)


def test_qwen2_5_3b_total_and_non_embedding(paper):
    # Qwen/Qwen2.5-3B model card: 3.09B parameters, 2.77B non-embedding (tied embeddings).
    llm = paper[0][2]["modules"]["llm"]["total"]
    assert llm == 3_085_938_688 and within(llm, 3.09e9)
    assert within(llm - 151936 * 2048, 2.77e9)


@pytest.mark.parametrize("hub_id, published", [("Qwen/Qwen2.5-1.5B", 1.54e9), ("Qwen/Qwen2.5-0.5B", 0.49e9)])
def test_smaller_qwen2_5(hub_id, published):
    # Model cards: Qwen2.5-1.5B 1.54B, Qwen2.5-0.5B 0.49B parameters.
    from transformers import AutoModelForCausalLM

    cfg = paper_configs_for(llm=hub_id)["llm"][0]
    with torch.device("meta"):
        n = sum(p.numel() for p in AutoModelForCausalLM.from_config(cfg).parameters())
    assert within(n, published)


def test_small_modules_follow_the_paper_shapes(paper):
    m1, m2 = paper[0][1]["modules"], paper[0][2]["modules"]
    assert m1["queries"]["total"] == 77 * 1024  # 1 × 77 × 1024
    assert m1["phi"]["total"] == 2 * (1024 * 1024 + 1024)  # Linear(1024,1024) → GELU → Linear(1024,1024)
    h = 2048  # Qwen2.5-3B hidden size: ψ = Linear(1024, H) → GELU → Linear(H, H)
    assert m2["psi"]["total"] == (1024 * h + h) + (h * h + h)


# ---------------------------------------------------------------------------- trainable rules


def test_stage1_trains_the_language_model_queries_and_phi_only(paper):
    c = paper[0][1]
    m = c["modules"]
    assert "other" not in m
    for name in ("vision_tower", "vision_projector", "vae", "text_encoder", "unet"):
        assert m[name]["trainable"] == 0, name
    for name in (*LANGUAGE_PARTS, "queries", "phi"):
        assert m[name]["trainable"] == m[name]["total"] > 0, name
    assert c["trainable"] == trainable(c, *LANGUAGE_PARTS, "queries", "phi")
    assert c["total"] == sum(r["total"] for r in m.values())


def test_stage1_vision_tower_flag():
    c = param_counts(job("stage1-paper.yaml", "model.train_vision_tower=true"))
    m = c["modules"]
    assert m["vision_tower"]["trainable"] == m["vision_tower"]["total"]
    assert m["vision_projector"]["trainable"] == m["vision_projector"]["total"]
    assert m["unet"]["trainable"] == 0


def test_stage2_trainable_parts(paper):
    c = paper[0][2]
    m = c["modules"]
    assert set(m) == {*FLORENCE_PARTS, "queries", "phi", "text_encoder", "psi", "llm"}
    assert m["text_encoder"]["trainable"] == 0 and m["vision_tower"]["trainable"] == 0
    assert c["trainable"] == trainable(c, *LANGUAGE_PARTS, "queries", "phi") + total(c, "psi", "llm")
    frozen = param_counts(job("stage2-paper.yaml", "model.train_encoder=false"))
    assert frozen["trainable"] == total(frozen, "psi", "llm")
    assert frozen["total"] == c["total"]


def test_counting_is_fast_and_allocates_nothing(paper):
    assert paper[1] < 20, f"building both paper stages took {paper[1]:.1f}s"
    enc, dec = build_stage1("paper", resolution=384, empty=True)
    assert {p.device.type for p in [*enc.parameters(), *dec.parameters()]} == {"meta"}


def test_meta_build_counts_equal_the_real_build():
    """The tiny preset both ways: building on the meta device changes no count or flag."""
    real_enc, real_dec = build_stage1("tiny", resolution=32)
    meta_enc, meta_dec = build_stage1("tiny", resolution=32, empty=True)
    assert next(meta_enc.parameters()).is_meta and not next(real_enc.parameters()).is_meta
    assert count_parts(meta_enc, ENCODER_PARTS) == count_parts(real_enc, ENCODER_PARTS)
    assert count_parts(meta_dec, DECODER_PARTS) == count_parts(real_dec, DECODER_PARTS)
    # and the encoder's own summary agrees with the split
    own = real_enc.param_counts()
    split = count_parts(real_enc, ENCODER_PARTS)
    assert sum(r["trainable"] for r in own.values()) == sum(r["trainable"] for r in split.values())
    assert sum(r["total"] for r in own.values()) == sum(r["total"] for r in split.values())
    c = param_counts(job("tiny.yaml"))
    assert c["modules"] == {**split, **count_parts(real_dec, DECODER_PARTS)}


def test_local_model_directories_are_read(tmp_path):
    """A job naming local directories is counted from their config.json files."""
    from transformers import AutoModelForCausalLM

    from vlv_ray.models.captioner import tiny_captioner
    from vlv_ray.models.presets import tiny_florence2_config

    _, dec = build_stage1("tiny", resolution=32)
    dec.save_pretrained(tmp_path / "sd")
    tiny_florence2_config().save_pretrained(tmp_path / "florence")
    llm = tiny_captioner(prefix_dim=32).llm
    llm.config.save_pretrained(tmp_path / "llm")
    c = param_counts(job("stage2-paper.yaml", f"model.florence={tmp_path / 'florence'}",
                         f"model.stable_diffusion={tmp_path / 'sd'}", f"model.llm={tmp_path / 'llm'}"))
    tiny = param_counts(job("tiny-stage2.yaml"))
    for name in (*FLORENCE_PARTS, "text_encoder", "llm"):
        assert c["modules"][name]["total"] == tiny["modules"][name]["total"], name
    assert c["configs"]["llm"] == str(tmp_path / "llm")
    with torch.device("meta"):
        assert c["modules"]["llm"]["total"] == sum(
            p.numel() for p in AutoModelForCausalLM.from_config(llm.config).parameters())


def test_unknown_model_and_empty_directory_are_named(tmp_path):
    from vlv_ray.models.presets import ModelBuildError

    with pytest.raises(ModelBuildError, match="model.llm: 'Qwen/Qwen9' is neither"):
        param_counts(job("stage2-paper.yaml", "model.llm=Qwen/Qwen9"))
    with pytest.raises(ModelBuildError, match=r"model.stable_diffusion: .* \(no vae/config.json"):
        param_counts(job("stage1-paper.yaml", f"model.stable_diffusion={tmp_path}"))


# ---------------------------------------------------------------------------- command line


def vlv(*args):
    return subprocess.run([sys.executable, "-m", "vlv_ray.cli", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def test_cli_table_stage1():
    r = vlv("config", "show", "jobs/stage1-paper.yaml", "--params")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    unet = next(l for l in lines if l.startswith("unet "))
    assert "865.9M" in unet and "865,910,724" in unet
    last = lines[-1].split()
    assert last[:3] == ["total", "2.06B", "409.6M"], lines[-1]
    assert "published config of florence-community/Florence-2-large" in r.stdout


def test_cli_json_stage2():
    r = vlv("config", "show", "jobs/stage2-paper.yaml", "--params", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)  # exactly one JSON object
    assert out["stage"] == 2 and out["preset"] == "paper"
    assert out["modules"]["llm"] == {"total": 3_085_938_688, "trainable": 3_085_938_688}
    assert out["total"] == sum(m["total"] for m in out["modules"].values())


def test_cli_bad_model_is_one_line_exit_2():
    r = vlv("config", "show", "jobs/stage2-paper.yaml", "model.llm=nobody/nothing", "--params")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vlv-ray: error: model.llm: 'nobody/nothing'"), r.stderr
