"""`vlv-ray eval`: the Ray Data path (held-out shards → 2 CPU actors that reconstruct and
extract → statistics on the driver) and bad input through the CLI in a subprocess."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from vlv_ray.models import export
from vlv_ray.models.presets import build_stage1

VLV = [sys.executable, "-m", "vlv_ray.cli"]
FEATURES = "vlv_ray.toyworld.reader:feature_extractor"  # the miniature world's extractor: 32 px in


def tiny_clip(path):
    """A random CLIP with the toy world's CLIP tokenizer, saved as a CLIP model directory."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    from vlv_ray.toyworld.tokens import clip_tokenizer

    tok = clip_tokenizer()
    cfg = CLIPConfig(text_config=dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                      num_attention_heads=2, max_position_embeddings=16, bos_token_id=0,
                                      eos_token_id=1, pad_token_id=1),
                     vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                        num_attention_heads=2, image_size=32, patch_size=8), projection_dim=16)
    torch.manual_seed(0)
    CLIPModel(cfg).save_pretrained(path)
    CLIPProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": 32},
                                                     crop_size={"height": 32, "width": 32}),
                  tokenizer=tok).save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    encoder, _ = build_stage1("tiny", resolution=32, seed=0)
    tensors = {n: p for n, p in encoder.named_parameters() if p.requires_grad}
    meta = {"kind": "vlv-stage1", "preset": "tiny", "num_queries": 77, "resolution": 32, "seed": 0,
            "florence": None, "stable_diffusion": None, "train_vision_tower": False, "step": 3,
            "config_hash": "x", "job": "t"}
    export.save(str(root / "stage1"), tensors, meta)
    export.save(str(root / "stage2"), {}, {**meta, "kind": "vlv-stage2"})  # only its kind is read
    return root, tiny_clip(root / "clip")


def _spec(root, clip, data, **kw):
    from vlv_ray.eval.job import EvalSpec

    return EvalSpec(kind="recon", export=str(root / "stage1"), data=str(data), images=20, guidance=[1.0, 3.0],
                    steps=2, features=FEATURES, clip=clip, batch_size=6, grid_rows=4, **kw)


def test_recon_eval_runs_on_two_cpu_actors_and_states_its_protocol(ray_cluster, exports, tiny_dataset, tmp_path):
    from vlv_ray.eval import job

    root, clip = exports
    out = tmp_path / "out"
    s = job.run(_spec(root, clip, tiny_dataset, actors=2), out=str(out), progress=False)
    assert s["images"] == 20 and [r["metric"] for r in s["results"]] == ["recon_fid", "clip_image_image"] * 2
    fid1, clip1, fid3, clip3 = (r["value"] for r in s["results"])
    assert fid1 > 0 and fid3 > 0 and fid1 != fid3  # an untrained encoder: far from the originals
    assert 0 <= clip1 <= 100 and 0 <= clip3 <= 100
    p = s["results"][0]["protocol"]
    assert (p["images"], p["guidance"], p["steps"], p["seed"], p["scheduler"]) == (20, 1.0, 2, 0, "DDIMScheduler")
    assert p["features"] == f"{FEATURES}, 64 features" and p["resolution"] == 32 and p["export_step"] == 3
    assert json.loads((out / "eval.json").read_text())["results"] == s["results"]
    grid = np.asarray(Image.open(out / "grid.png"))
    assert grid.shape == (4 * 32, 3 * 32, 3)  # 4 rows: original | guidance 1 | guidance 3
    # One actor or two: the same batches with the same noise, the same statistics.
    again = job.run(_spec(root, clip, tiny_dataset, actors=1), progress=False)
    assert [r["value"] for r in again["results"]] == [r["value"] for r in s["results"]]


def test_fid_of_the_originals_against_themselves_is_zero_through_the_extractor(exports, tiny_dataset):
    """The same extractor, in process: the held-out originals against themselves."""
    from vlv_ray.eval import features
    from vlv_ray.eval.fid import fid
    from vlv_ray.infer.images import batches

    files = sorted(str(p) for p in (tiny_dataset.parent / "img").iterdir() if p.suffix in (".png", ".jpg"))
    images = np.concatenate([a for _, a in batches(files, 32, 16)])
    feats = features.extract(features.load(FEATURES), torch.from_numpy(images)).numpy()
    assert abs(fid(feats, feats)) < 1e-6 and fid(feats[:32], feats[32:]) > 0


def _cli(*args, cwd=None):
    return subprocess.run([*VLV, "eval", *args], capture_output=True, text=True, cwd=cwd)


def test_bad_input_is_one_line_and_exit_2(exports, tiny_dataset, tmp_path):
    root, clip = exports
    s1, s2, data = str(root / "stage1"), str(root / "stage2"), str(tiny_dataset)
    (tmp_path / "notpipe").mkdir()
    (tmp_path / "notpipe" / "model_index.json").write_text(json.dumps({"_class_name": "AutoencoderKL"}))
    (tmp_path / "badindex").mkdir()
    (tmp_path / "badindex" / "model_index.json").write_text("{not json")
    cases = [
        (["recon", "--stage1", s2, "--data", data], "a 'vlv-stage2' export, expected a vlv-stage1 export"),
        (["caption", "--stage2", s1, "--data", data], "a 'vlv-stage1' export, expected a vlv-stage2 export"),
        (["recon", "--stage1", s1, "--data", data, "--images", "65"],
         f"{data}: holds 64 images, fewer than the 65 asked for"),
        (["caption", "--stage2", s2, "--data", data, "--t2i", str(root)],
         f"{root}: not a diffusers pipeline directory (no model_index.json)"),
        (["caption", "--stage2", s2, "--data", data, "--t2i", str(tmp_path / "notpipe")],
         "_class_name 'AutoencoderKL' is not a diffusers pipeline class"),
        (["caption", "--stage2", s2, "--data", data, "--t2i", str(tmp_path / "badindex")],
         "model_index.json: not a diffusers model index (expected a JSON object with _class_name)"),
        (["recon", "--stage1", s1, "--data", data, "--images", "1"], "--images: got 1, expected at least 2"),
        (["recon", "--stage1", s1, "--data", data, "--guidance", "2,x"], "--guidance: got '2,x'"),
        (["recon", "--stage1", s1, "--data", data, "--features", "nope"], "--features: got 'nope'"),
        (["recon", "--stage1", s1, "--data", str(tmp_path)], "manifest.json"),
    ]
    for args, msg in cases:
        r = _cli(*args, "--clip", clip, "--features", FEATURES) if "--features" not in args else _cli(*args)
        assert r.returncode == 2, (args, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("vlv-ray: error: ") and msg in lines[0], (args, r.stderr)


@pytest.fixture(scope="module")
def toy_exports(tmp_path_factory):
    """Stage-1 and stage-2 exports of the toy preset (untrained) and the teacher as a diffusers
    text-to-image pipeline directory."""
    from types import SimpleNamespace

    from diffusers import StableDiffusionPipeline

    from vlv_ray.models.caption_model import build_caption_model
    from vlv_ray.toyworld import evaluate, tokens
    from vlv_ray.toyworld.assets import TEACHER_DIR

    root = tmp_path_factory.mktemp("toy")
    s1 = evaluate.untrained_stage1(root / "stage1", num_queries=4, resolution=32, sd_path=str(TEACHER_DIR))
    encoder, decoder, meta = export.load_stage1(s1)
    model = build_caption_model(SimpleNamespace(preset="toy", llm=None, train_encoder=False), encoder,
                                decoder.text_encoder)
    tensors = {n: p for n, p in model.named_parameters() if p.requires_grad}
    export.save(str(root / "stage2"), tensors, {"kind": "vlv-stage2", "preset": "toy", "llm": None, "stage1": s1,
                                                 "train_encoder": False, "max_caption_tokens": 14, "resolution": 32,
                                                 "seed": 0, "step": 1, "config_hash": "x", "job": "t"})
    pipe = StableDiffusionPipeline(vae=decoder.vae, text_encoder=decoder.text_encoder,
                                   tokenizer=tokens.clip_tokenizer(), unet=decoder.unet,
                                   scheduler=decoder.noise_scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.save_pretrained(root / "t2i")
    return root


def test_caption_eval_through_the_cli_reports_clip_score_and_t2i_fid(ray_head, toy_exports, exports, tiny_dataset,
                                                                     tmp_path):
    from conftest import user_env

    _, clip = exports
    out = tmp_path / "out"
    env = user_env(tmp_path / "home", RAY_ADDRESS=ray_head.address)
    r = subprocess.run([*VLV, "eval", "caption", "--stage2", str(toy_exports / "stage2"), "--data", str(tiny_dataset),
                        "--t2i", str(toy_exports / "t2i"), "--images", "8", "--steps", "2", "--guidance", "2",
                        "--features", FEATURES, "--clip", clip, "--batch-size", "4", "--max-new-tokens", "6",
                        "--beams", "1", "--out", str(out)], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary == json.loads((out / "eval.json").read_text())
    assert [x["metric"] for x in summary["results"]] == ["clip_text_image", "caption_t2i_fid"]
    assert 0 <= summary["results"][0]["value"] <= 100 and summary["results"][1]["value"] > 0
    assert summary["results"][1]["protocol"]["t2i"] == str(toy_exports / "t2i")
    assert len(summary["samples"]) == 8 and all(isinstance(s["caption"], str) for s in summary["samples"])
    assert "[eval] 8/8 images" in r.stderr and "ETA" in r.stderr
    assert np.asarray(Image.open(out / "grid.png")).shape == (8 * 32, 2 * 32, 3)
