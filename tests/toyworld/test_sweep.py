"""`vlv-ray sweep` as a user runs it: the CLI in a clean shell against a real Ray head, a
2-point sweep (tiny budgets) whose points run as Ray Tune trials, each with Ray Train +
DeepSpeed inside; and bad input → one line, exit 2, before Ray starts."""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest
from PIL import Image

from conftest import user_env
from helpers import JOBS
from helpers import vlv as _vlv

TINY = ["max_steps=3", "optim.warmup_steps=1", "data.batch_size=4", "logging.every_steps=1",
        "checkpoint.every_steps=3", "cost.local_node_usd_per_hour=0.192", "cost.poll_s=1"]


def _sweep_file(tmp_path: Path, **extra) -> Path:
    spec = {"name": "test-sweep", "stage1": {"job": str(JOBS / "toy-stage1.yaml"), "overrides": TINY},
            "stage2": {"job": str(JOBS / "toy-stage2.yaml"), "overrides": TINY},
            "held_out": 16, "images": [999], "queries": [16], **extra}  # the CLI's --images/--queries replace the lists
    path = tmp_path / "sweep.yaml"
    path.write_text(json.dumps(spec))  # JSON is YAML
    return path


def test_two_point_sweep_runs_as_tune_trials(ray_head, tmp_path):
    env = user_env(tmp_path / "home", RAY_ADDRESS=ray_head.address,
                   TORCH_EXTENSIONS_DIR=os.environ["TORCH_EXTENSIONS_DIR"])
    work = tmp_path / "out"
    r = _vlv(["sweep", str(_sweep_file(tmp_path)), "--images", "80,160", "--queries", "8", "--workdir", str(work),
              "--json"], env, tmp_path)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-4000:]

    # Progress: one line per trial start and end.
    assert out.count("[sweep] point 1/2 started") == 1 and out.count("[sweep] point 2/2 started") == 1, out[-3000:]
    assert out.count("[sweep] point done:") == 2, out[-3000:]

    # Both points ran as Ray Tune trials: Tune's experiment directory holds one trial each, with its result.
    (experiment,) = (work / "tune").iterdir()
    trials = {json.loads((d / "params.json").read_text())["images"]: d for d in experiment.iterdir() if d.is_dir()}
    assert sorted(trials) == [80, 160]
    for n, d in trials.items():
        results = [json.loads(line) for line in (d / "result.json").read_text().splitlines()]
        assert results[-1]["images"] == n and results[-1]["queries"] == 8 and results[-1]["trial_id"]
        # ... and each ran stage 1 through Ray Train + the exporter, at the sweep's query count.
        (export,) = (work / "points" / f"n{n}-q8" / "runs").glob("toy-stage1-*/export/stage1")
        meta = json.loads((export / "vlv.json").read_text())
        assert meta["num_queries"] == 8

    with (work / "sweep.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [(int(x["images"]), int(x["queries"]), int(x["paired_images"])) for x in rows] == [(80, 8, 8), (160, 8, 16)]
    for x in rows:
        assert x["status"] == "ok" and not x["error"]
        for k in ("accuracy", "accuracy_count", "accuracy_size", "accuracy_colour", "accuracy_shape",
                  "accuracy_position"):
            assert 0.0 <= float(x[k]) <= 1.0, (k, x)
        assert float(x["worker_hours"]) > 0 and float(x["usd"]) > 0  # the local node priced at $0.192/h
        assert float(x["stage1_loss"]) > 0 and float(x["wall_s"]) > 0
        assert float(x["recon_fid"]) > 0 and 0.0 <= float(x["recon_accuracy"]) <= 1.0  # FID in miniature

    # The JSON line is the same rows; the table has a line per point; the plot is a real PNG.
    last = json.loads(r.stdout.strip().splitlines()[-1])
    assert [(x["images"], x["accuracy"]) for x in last] == [(int(x["images"]), float(x["accuracy"])) for x in rows]
    table = (work / "sweep.md").read_text().splitlines()
    assert table[0].startswith("| images | queries | paired images | caption accuracy |")
    assert [line.split("|")[1:4] for line in table[2:]] == [[" 80 ", " 8 ", " 8 "], [" 160 ", " 8 ", " 16 "]]
    with Image.open(work / "sweep.png") as png:
        assert png.format == "PNG" and png.width >= 800 and png.height >= 300


@pytest.mark.parametrize("args, extra, expected", [
    (["--images", "abc"], {}, "vlv-ray: error: --images: got 'abc', expected comma-separated whole numbers"),
    (["--queries", "32"], {}, "vlv-ray: error: --queries: got 32, expected counts ≤ 16: the toy preset's "
                              "model.num_queries is at most 16"),
    ([], {"imagess": [100]}, "imagess: unknown key; did you mean 'images'?"),
    ([], {"paired_fraction": 0.5}, "paired_fraction: got 0.5, expected a value in (0.0, 0.1]"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, extra, expected):
    env = user_env(tmp_path / "home")
    r = _vlv(["sweep", str(_sweep_file(tmp_path, **extra)), *args, "--workdir", str(tmp_path / "out")], env, tmp_path,
             timeout=300)
    assert r.returncode == 2, r.stdout[-2000:] + r.stderr[-2000:]
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vlv-ray: error: ") and expected in lines[0], r.stderr
    assert not (tmp_path / "out").exists()  # nothing ran
