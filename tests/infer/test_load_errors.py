"""`vlv-ray caption`/`reconstruct` on inputs a user gets wrong: one line, exit 2, before the
model is built where that can be known."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from vlv_ray.data import synthetic
from vlv_ray.models import export
from vlv_ray.models.presets import build_stage1

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    root = tmp_path_factory.mktemp("load-errors")
    encoder, _ = build_stage1("tiny", resolution=32, seed=0)
    export.save(str(root / "stage1"), {n: p for n, p in encoder.named_parameters() if p.requires_grad},
                {"kind": "vlv-stage1", "preset": "tiny", "num_queries": 77, "resolution": 32, "seed": 0,
                 "step": 1, "config_hash": "x", "job": "t"})
    synthetic.write_images(root / "img", n=1, seed=4)
    (root / "notes.txt").write_text("not an image\n")
    return root


def vlv(*args):
    return subprocess.run([sys.executable, "-m", "vlv_ray.cli", *map(str, args)], cwd=REPO, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(REPO)})


def one_line(r, *needles):
    assert r.returncode == 2, r.stderr[-3000:]
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vlv-ray: error: "), r.stderr[-3000:]
    for n in needles:
        assert n in lines[0], lines[0]


def damaged(good, tmp_path, name, keep_bytes):
    d = tmp_path / "export"
    shutil.copytree(good / "stage1", d)
    f = d / name
    f.write_bytes(f.read_bytes()[:keep_bytes])
    return d


def test_a_txt_where_an_image_or_an_export_belongs(good, tmp_path):
    one_line(vlv("reconstruct", good / "stage1", good / "notes.txt", "--out", tmp_path / "g.png"),
             "notes.txt: not an image")
    one_line(vlv("caption", good / "notes.txt", good / "img"), "notes.txt: not a vlv-ray export")


@pytest.mark.parametrize("name, keep, message", [
    (export.WEIGHTS_FILE, 5000, "trainable.safetensors: not a readable safetensors file"),
    (export.META_FILE, 20, "vlv.json: not valid JSON"),
])
def test_truncated_export(good, tmp_path, name, keep, message):
    one_line(vlv("reconstruct", damaged(good, tmp_path, name, keep), good / "img", "--out", tmp_path / "g.png",
                 "--steps", "1"), message, "export again")


def test_out_in_a_read_only_dir_fails_before_the_work(good, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    root = os.geteuid() == 0  # root ignores modes: give it a read-only filesystem
    if root:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(ro)], check=True)
    else:
        ro.chmod(0o555)
    try:
        r = vlv("reconstruct", good / "stage1", good / "img", "--out", ro / "grid.png", "--steps", "1")
        one_line(r, f"{ro / 'grid.png'}: Read-only file system")  # the path given, not a probe file beside it
        assert "[reconstruct]" not in r.stderr  # no image was sampled first
        one_line(vlv("caption", good / "stage1", good / "img", "--out", ro / "c.jsonl"),
                 f"{ro / 'c.jsonl'}: Read-only file system")
    finally:
        subprocess.run(["umount", str(ro)], check=True) if root else ro.chmod(0o755)
