"""Stage 2 end to end: a stage-1 export + captioned shards → 2-worker ZeRO-2 training of
the encoder, projector and LLM → export → `vlv-ray caption`."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vlv_ray.config import load_job
from vlv_ray.data import shards, synthetic
from vlv_ray.models import export
from vlv_ray.models.presets import build_stage1
from vlv_ray.train import launch

from helpers import JOBS


@pytest.fixture(scope="module")
def captioned(tmp_path_factory):
    """64 images, 60 with captions (4 rows must be dropped as no_caption), and a stage-1 export."""
    root = tmp_path_factory.mktemp("stage2")
    synthetic.write_images(root / "img", n=64, seed=2, captions=root / "all.jsonl")
    lines = (root / "all.jsonl").read_text().splitlines()
    (root / "captions.jsonl").write_text("\n".join(lines[:60]) + "\n")
    shards.prepare(str(root / "img"), str(root / "data"), shard_rows=16, captions=str(root / "captions.jsonl"),
                   progress=False)
    encoder, _ = build_stage1("tiny", resolution=32)
    export.save(str(root / "stage1"), {n: p for n, p in encoder.named_parameters() if p.requires_grad},
                {"kind": "vlv-stage1", "preset": "tiny", "num_queries": 77, "resolution": 32, "seed": 0,
                 "step": 8, "config_hash": "x", "job": "tiny"})
    return root


def test_stage2_trains_exports_and_captions(ray_cluster, captioned, tmp_path, capfd):
    cfg = load_job(JOBS / "tiny-stage2.yaml", [
        f"data.uri={captioned / 'data'}", f"model.stage1={captioned / 'stage1'}", f"storage_path={tmp_path}",
        "max_steps=6", "checkpoint.every_steps=3", "logging.eval_every_steps=3"])
    result = launch.run(cfg)
    assert result.error is None, result.error
    m = result.metrics
    assert m["step"] == 6 and m["tokens_per_s"] > 0 and torch.isfinite(torch.tensor(m["loss"]))
    out = capfd.readouterr().out
    assert " tok/s | " in out and "stage 2, 2 workers" in out
    # Rows without a caption are dropped by reason, never trained on.
    rejects = [json.loads(l) for p in (tmp_path / "tiny-stage2" / "rejects").glob("*.jsonl")
               for l in p.read_text().splitlines()]
    assert rejects and {r["reason"] for r in rejects} == {"no_caption"}
    assert {r["key"] for r in rejects} <= {f"img-{i:05d}" for i in range(60, 64)}
    # The caption table at step 3: generated captions beside the references.
    table = [json.loads(l) for l in (tmp_path / "tiny-stage2" / "eval" / "captions-step-00000003.jsonl")
             .read_text().splitlines()]
    assert len(table) == 4 and all(set(r) == {"key", "caption", "reference"} for r in table)

    # The export loads in one call, strictly, with exactly what stage 2 trained.
    model, meta = export.load_stage2(str(tmp_path / "tiny-stage2"))
    assert meta["kind"] == "vlv-stage2" and meta["step"] == 6 and meta["train_encoder"] is True
    trained = export.read(str(tmp_path / "tiny-stage2"))[1]
    assert any(k.startswith("encoder.") for k in trained) and any(k.startswith("captioner.llm.") for k in trained)
    assert not any(k.startswith("text_encoder.") for k in trained)  # CLIP text stays frozen
    assert all(torch.equal(dict(model.named_parameters())[k], v) for k, v in trained.items())

    r = subprocess.run([sys.executable, "-m", "vlv_ray.cli", "caption", str(tmp_path / "tiny-stage2"),
                        str(captioned / "img" / "img-00000.png"), str(captioned / "img" / "img-00001.jpg"),
                        "--out", str(tmp_path / "captions.jsonl"), "--beams", "2", "--max-new-tokens", "12"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    records = [json.loads(l) for l in (tmp_path / "captions.jsonl").read_text().splitlines()]
    assert [Path(x["image"]).name for x in records] == ["img-00000.png", "img-00001.jpg"]
    assert all(isinstance(x["caption"], str) for x in records)


def test_stage2_needs_a_stage1_export(tmp_path):
    r = subprocess.run([sys.executable, "-m", "vlv_ray.cli", "train", str(JOBS / "tiny-stage2.yaml"),
                        "model.stage1=null"], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "model.stage1: required for stage 2" in r.stderr
