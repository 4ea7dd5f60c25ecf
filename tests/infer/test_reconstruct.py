"""Stage-1 exports load in one strict call; `vlv-ray reconstruct` draws originals beside
reconstructions with classifier-free guidance."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vlv_ray.data import synthetic
from vlv_ray.data.decode import decode_image
from vlv_ray.models import export
from vlv_ray.models.presets import build_stage1

VLV = [sys.executable, "-m", "vlv_ray.cli"]


@pytest.fixture(scope="module")
def stage1_export(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    encoder, _ = build_stage1("tiny", resolution=32, seed=0)
    with torch.no_grad():
        encoder.queries.add_(1.0)  # "trained": differs from a fresh build
    tensors = {n: p for n, p in encoder.named_parameters() if p.requires_grad}
    meta = {"kind": "vlv-stage1", "preset": "tiny", "num_queries": 77, "resolution": 32, "seed": 0,
            "florence": None, "stable_diffusion": None, "train_vision_tower": False, "step": 7,
            "config_hash": "x", "job": "t"}
    export.save(str(root / "stage1"), tensors, meta)
    synthetic.write_images(root / "img", n=3, seed=4)
    return root, encoder


def test_load_stage1_is_one_call_and_restores_the_trained_weights(stage1_export):
    root, trained = stage1_export
    encoder, decoder, meta = export.load_stage1(str(root / "stage1"))
    assert meta["step"] == 7 and not encoder.training
    assert torch.equal(encoder.queries, trained.queries)
    assert all(torch.equal(a, b) for a, b in zip(encoder.state_dict().values(), trained.state_dict().values()))


def test_strict_loading_names_missing_and_unexpected_keys(stage1_export):
    root, trained = stage1_export
    encoder, _ = build_stage1("tiny", resolution=32)
    tensors = {n: p.detach().clone() for n, p in trained.named_parameters() if p.requires_grad}
    del tensors["queries"]
    tensors["not.a.weight"] = torch.zeros(1)
    with pytest.raises(export.ExportError, match=r"missing keys queries; unexpected keys not\.a\.weight"):
        export.load_strict(encoder, tensors, "f.safetensors")
    tensors = {n: p.detach().clone() for n, p in trained.named_parameters() if p.requires_grad}
    tensors["queries"] = torch.zeros(3, 3)
    with pytest.raises(export.ExportError, match=r"shape mismatches queries: file \(3, 3\)"):
        export.load_strict(encoder, tensors, "f.safetensors")


def test_reconstruct_cli_writes_originals_beside_reconstructions(stage1_export, tmp_path):
    root, _ = stage1_export
    out = tmp_path / "grid.png"
    args = [*VLV, "reconstruct", str(root / "stage1"), str(root / "img"), "--out", str(out), "--steps", "3",
            "--guidance", "3", "--seed", "1", "--batch-size", "2"]
    r = subprocess.run(args, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "3 images" in r.stdout and "[reconstruct] 3/3 images" in r.stderr
    grid = np.asarray(Image.open(out))
    assert grid.shape == (3 * 32, 2 * 32, 3)
    files = sorted((root / "img").iterdir())
    for i, f in enumerate(files):  # left column: the original as the model saw it
        assert np.array_equal(grid[i * 32:(i + 1) * 32, :32], decode_image(f.read_bytes(), 32))
    assert grid[:, 32:].std() > 0  # something was drawn
    # Same seed, same picture; another seed or scheduler, another picture.
    again = tmp_path / "again.png"
    subprocess.run([a if a != str(out) else str(again) for a in args], check=True, capture_output=True)
    assert np.array_equal(np.asarray(Image.open(again)), grid)
    other = tmp_path / "other.png"
    subprocess.run([a if a != str(out) else str(other) for a in args] + ["--scheduler", "EulerDiscreteScheduler"],
                   check=True, capture_output=True)
    assert not np.array_equal(np.asarray(Image.open(other))[:, 32:], grid[:, 32:])


@pytest.mark.parametrize("bad, message", [
    (["--steps", "0"], "--steps: got 0, expected at least 1"),
    (["--scheduler", "NoSuchScheduler"], "'NoSuchScheduler' is not a diffusers scheduler class"),
])
def test_reconstruct_bad_options_are_one_line(stage1_export, tmp_path, bad, message):
    root, _ = stage1_export
    r = subprocess.run([*VLV, "reconstruct", str(root / "stage1"), str(root / "img"), "--out",
                        str(tmp_path / "g.png"), *bad], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and message in r.stderr


def test_reconstruct_without_an_export_is_one_line(tmp_path):
    r = subprocess.run([*VLV, "reconstruct", str(tmp_path), str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "not a vlv-ray export" in r.stderr
