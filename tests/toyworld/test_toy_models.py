"""The toy preset: the committed teacher loads like SD, follows captions; the reader reads."""
from __future__ import annotations

import pytest
import torch

from vlv_ray.models.decoder import FrozenDiffusion
from vlv_ray.models.presets import build_stage1
from vlv_ray.toyworld import evaluate, reader, world
from vlv_ray.toyworld.assets import TEACHER_DIR


def test_teacher_is_a_small_stable_diffusion_directory():
    for sub in ("vae", "text_encoder", "unet", "scheduler", "tokenizer"):
        assert (TEACHER_DIR / sub).is_dir(), sub
    weights = sum(p.stat().st_size for p in TEACHER_DIR.rglob("*.safetensors"))
    weights += reader.READER_FILE.stat().st_size
    assert weights <= 10 * 2**20
    teacher = FrozenDiffusion.from_pretrained(str(TEACHER_DIR))
    assert teacher.hidden_size == 64 and not any(p.requires_grad for p in teacher.parameters())


def test_toy_preset_trains_only_the_encoder():
    encoder, decoder = build_stage1("toy", num_queries=16, resolution=32, sd_path=None, seed=0)
    x = torch.from_numpy(world.arrays(0, 4)[0])
    loss = decoder.noise_loss(decoder.encode_images(x), decoder.condition(encoder(x)))
    loss.backward()
    assert all(p.grad is None for p in decoder.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in encoder.parameters() if p.requires_grad)
    again, _ = build_stage1("toy", num_queries=16, resolution=32, sd_path=str(TEACHER_DIR), seed=0)
    assert all(torch.equal(a, b) for a, b in zip(encoder.state_dict().values(), again.state_dict().values()))


def test_reader_reads_held_out_images():
    x, truth = evaluate.held_out(500, seed=4242)
    acc = reader.accuracy(reader.load().read(x), truth)
    assert acc["overall"] >= 0.98, acc


def test_teacher_samples_follow_their_captions():
    """The teacher draws what its captions say, every attribute, position included (chance:
    0.37 overall, 0.25 position; the committed weights score 0.99 here)."""
    _, truth = evaluate.held_out(48, seed=4243)
    samples = evaluate.teacher_samples(str(TEACHER_DIR), truth, steps=10, guidance=3.0)
    acc = evaluate.read_accuracy(samples, truth)
    assert acc["overall"] >= 0.9 and min(acc[k] for k in world.ATTRIBUTES) >= 0.8, acc


def test_fewer_queries_reconstruct_against_a_truncated_empty_prompt(tmp_path):
    """The query-count ablation's exports (n < 16 queries) still reconstruct: CFG's unconditional
    branch is the first n positions of CLIP's encoding of "", which the causal mask makes the
    encoding of the first n tokens exactly."""
    import numpy as np

    from vlv_ray.toyworld import tokens

    teacher = FrozenDiffusion.from_pretrained(str(TEACHER_DIR))
    tok = tokens.clip_tokenizer()
    ids = tok([""], padding="max_length", max_length=16, return_tensors="pt").input_ids
    with torch.no_grad():
        first8 = teacher.text_encoder(input_ids=ids[:, :8]).last_hidden_state
    torch.testing.assert_close(teacher.empty_prompt(3, tok, positions=8), first8.expand(3, -1, -1))

    export = evaluate.untrained_stage1(tmp_path / "s1", num_queries=8, resolution=32, sd_path=str(TEACHER_DIR))
    x, _ = evaluate.held_out(2)
    out = evaluate.reconstructions(export, x, steps=2)
    assert out.shape == x.shape and out.dtype == np.uint8
    f = evaluate.fid_in_miniature(x, out, steps=2)  # through vlv-ray eval's FID code, the reader's features
    assert f["value"] > 0 and abs(evaluate.fid_in_miniature(x, x)["value"]) < 1e-4
    assert f["protocol"]["images"] == 2 and f["protocol"]["features"].endswith("reader:feature_extractor, 64 features")


def test_a_tower_file_replaces_the_tower_and_projector_and_nothing_else(tmp_path):
    """`model.florence=FILE` (a pretrained toy tower): the tower and projector come from the
    file, every other weight is still the seed's; a file of anything else is refused."""
    from safetensors.torch import save_file

    from vlv_ray.toyworld import tower

    donor, _ = build_stage1("toy", num_queries=16, resolution=32, seed=1)
    path = tmp_path / "tower.safetensors"
    save_file(tower.tower_state(donor.florence), str(path))
    plain, _ = build_stage1("toy", num_queries=16, resolution=32, seed=0)
    loaded, _ = build_stage1("toy", num_queries=16, resolution=32, seed=0, florence_path=str(path))
    donor_sd, plain_sd = donor.state_dict(), plain.state_dict()
    moved = 0
    for k, v in loaded.state_dict().items():
        from_file = k.startswith(tuple(f"florence.{p}" for p in tower.PARTS))
        assert torch.equal(v, donor_sd[k] if from_file else plain_sd[k]), k
        moved += from_file and not torch.equal(v, plain_sd[k])
    assert moved > 10
    save_file({"x": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="not a toy vision tower"):
        build_stage1("toy", num_queries=16, resolution=32, florence_path=str(tmp_path / "other.safetensors"))


def test_a_missing_tower_file_is_a_config_error(tmp_path):
    from vlv_ray.config import ConfigError, load_job

    with pytest.raises(ConfigError, match=r"model\.florence: got .*nope\.safetensors.*expected a toy vision tower"):
        load_job("jobs/toy-stage1.yaml", [f"model.florence={tmp_path / 'nope.safetensors'}"])
