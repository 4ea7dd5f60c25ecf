"""`vlv-ray sweep` on real jobs (`kind: jobs`), as a user runs it: the CLI in a subprocess.

A 2-point sweep of the tiny preset end to end against the session's Ray head (stage 1 on
the manifest's first 8 and 16 images, `eval recon` per point); a points' subset is the
manifest's first rows, read in place; the cost model's estimates print before anything
starts and `--budget` refuses; bad input is one line and exit 2 before Ray starts; an
`images_seen` sweep over a run that has every point only reads its eval.jsonl.
"""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
from PIL import Image

from conftest import user_env
from helpers import JOBS
from helpers import vlv as _vlv

FEATURES = "vlv_ray.toyworld.reader:feature_extractor"  # the miniature world's extractor: tiny, no weights
# The tiny job at its smallest: one worker, no warm-up (a point of 8 images is 2 steps), no mid-run checkpoint;
# priced as a g5.xlarge at a stated throughput so the estimate has figures (benchmarks hold none for 32 px).
TINY = ["scaling.num_workers=1", "optim.warmup_steps=0", "checkpoint.every_steps=1000",
        "cost.instance_type=g5.xlarge", "cost.market=on-demand", "cost.local_node_usd_per_hour=0.192"]


def _sweep_file(tmp_path: Path, data: Path, **extra) -> Path:
    spec = {"kind": "jobs", "name": "t", "images": [8, 16],
            "stage1": {"job": str(JOBS / "tiny.yaml"), "throughput": 40.0,
                       "overrides": [f"data.uri={data}", f"storage_path={tmp_path / 'runs'}", *TINY]},
            "eval": {"data": str(data), "images": 8, "steps": 2, "features": FEATURES, "batch_size": 8}}
    for k, v in extra.items():
        spec[k] = {**spec.get(k, {}), **v} if isinstance(v, dict) else v
    path = tmp_path / "sweep.yaml"
    path.write_text(json.dumps(spec))  # JSON is YAML
    return path


def _env(tmp_path: Path, **extra) -> dict:
    return user_env(tmp_path / "home", TORCH_EXTENSIONS_DIR=os.environ["TORCH_EXTENSIONS_DIR"], **extra)


def test_two_real_job_points_run_end_to_end_through_the_cli(ray_head, tiny_dataset, tmp_path):
    work = tmp_path / "out"
    r = _vlv(["sweep", str(_sweep_file(tmp_path, tiny_dataset)), "--workdir", str(work), "--budget", "1",
              "--json"], _env(tmp_path, RAY_ADDRESS=ray_head.address), tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    out = r.stdout
    # The estimate comes before anything starts: one line per point, then the total.
    est = out.index("total (every point): $")
    assert est < out.index("[sweep] point 1/2: the first 8 images, 2 steps")
    assert "1 × g5.xlarge on-demand" in out[:est]
    rows = json.loads(out.strip().splitlines()[-1])
    assert [(x["images"], x["steps"], x["status"]) for x in rows] == [(8, 2, "ok"), (16, 4, "ok")]
    for x in rows:
        assert x["recon_fid"] > 0 and x["est_usd"] > 0 and x["est_gpu_hours"] > 0
        assert x["wall_s"] > 0 and x["worker_hours"] > 0 and x["gpu_hours"] == 0 and x["usd"] > 0  # CPU at $0.192/h
        assert (Path(x["run"]) / "export" / "stage1" / "vlv.json").is_file()
        summary = json.loads((work / "points" / f"n{x['images']}" / "recon" / "eval.json").read_text())
        assert summary["images"] == 8 and summary["results"][0]["value"] == x["recon_fid"]
    assert rows[1]["est_usd"] > rows[0]["est_usd"]  # twice the steps
    with (work / "sweep.csv").open() as f:
        table = list(csv.DictReader(f))
    assert [(t["images"], t["status"]) for t in table] == [("8", "ok"), ("16", "ok")]
    assert float(table[0]["recon_fid"]) == rows[0]["recon_fid"]
    assert "| images | steps | recon FID |" in (work / "sweep.md").read_text()
    assert np.asarray(Image.open(work / "sweep.png")).ndim == 3
    # Each point trained on its own subset: the run's job says so, and it did 2 and 4 steps.
    job = json.loads((Path(rows[0]["run"]) / "export" / "stage1" / "vlv.json").read_text())
    assert job["step"] == 2
    # Run again (the resume path): both points are reused, and keep what they cost when they ran.
    r = _vlv(["sweep", str(_sweep_file(tmp_path, tiny_dataset)), "--workdir", str(work), "--yes", "--json"],
             _env(tmp_path, RAY_ADDRESS=ray_head.address), tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert r.stdout.count("finished before (export at step") == 2 and "[vlv-ray] cost: $" not in r.stdout
    again = json.loads(r.stdout.strip().splitlines()[-1])
    measured = ("wall_s", "worker_hours", "gpu_hours", "usd")
    assert [[x[k] for k in measured] for x in again] == [[x[k] for k in measured] for x in rows]


def test_a_subset_is_the_manifests_first_images_read_in_place(tiny_dataset):
    """data.max_images=20 reads the first 20 rows of the manifest (shards, row groups, rows as
    stored): 2 whole row groups of 8 and the first 4 rows of the third, no copy."""
    from vlv_ray.data import pipeline, shards

    fs, paths, manifest = pipeline.shard_paths(str(tiny_dataset))
    blocks = pipeline.job_blocks(str(tiny_dataset), manifest, 20)
    assert [(b.rows, b.stored_rows) for b in blocks] == [(8, 8), (8, 8), (4, 8)]
    items = {"shard": [b.shard for b in blocks], "group": [b.group for b in blocks], "block": [0, 1, 2],
             "rows": [b.rows for b in blocks], "stored": [b.stored_rows for b in blocks], "start": [0, 0, 0],
             "stop": [b.rows for b in blocks], "pos": [0, 8, 16]}
    got = pipeline.read_segments({k: np.asarray(v) for k, v in items.items()}, fs=fs, paths=paths, seed=3,
                                 epoch=1, columns=["key"])
    first = [r["key"] for r in shards.iter_rows(str(tiny_dataset))][:20]
    assert sorted(got["key"]) == sorted(first) and list(got["key"]) != first  # the same rows, shuffled


def test_estimates_print_and_a_sweep_over_budget_starts_nothing(tiny_dataset, tmp_path):
    r = _vlv(["sweep", str(_sweep_file(tmp_path, tiny_dataset)), "--budget", "0.000001"], _env(tmp_path), tmp_path)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vlv-ray: error: --budget: the sweep's estimate $"), r.stderr
    assert "over the budget $0.0000; nothing started; pass --yes to start anyway" in lines[0]
    assert "total (every point): $" in r.stdout and "[sweep] point" not in r.stdout
    assert not (tmp_path / "runs").exists()


def test_bad_sweep_input_is_one_line_and_exit_2(tiny_dataset, tmp_path, capsys):
    """Two cases as a user meets them (a subprocess), the rest through the same `main()` in process."""
    from vlv_ray.cli import main

    cases = [
        ({"stage1": {"job": "no-such-job.yaml"}}, "stage1.job: ", "no-such-job.yaml: no such job file"),
        ({"images": [8, 65]}, "images: got 65, expected at most the 64 images", "manifest.json lists"),
        ({"eval": {"images": 65}}, "eval.images: got 65, expected at most the 64 images", ""),
        ({"eval": {"features": "nope"}}, "eval.features: got 'nope'", ""),
        ({"mode": "images_seen", "stage2": {"job": "tiny-stage2.yaml"}}, "stage2.job: mode images_seen", ""),
        ({"kind": "real"}, "kind: got 'real', expected one of 'toy', 'jobs'", ""),
        ({"stage1": {"overrides": ["optim.lr=-1"]}}, "stage1: ", "optim.lr: got -1"),
        ({"images": []}, "images: got [], expected at least one count", ""),
        ({"images": [3]}, "images: got 3, expected at least one batch per worker (1 × data.batch_size 4 = 4)", ""),
        ({"stage2": {"job": "tiny-stage2.yaml"}}, "eval.clip: stage 2's caption metrics need a CLIP model", ""),
    ]
    for i, (extra, msg, more) in enumerate(cases):
        path = _sweep_file(tmp_path, tiny_dataset, **extra)
        if i < 2:
            r = _vlv(["sweep", str(path)], _env(tmp_path), tmp_path)
            code, err = r.returncode, r.stderr
        else:
            code, err = main(["sweep", str(path)]), capsys.readouterr().err
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1, (extra, err[-2000:])
        assert lines[0].startswith(f"vlv-ray: error: {path}: ") and msg in lines[0] and more in lines[0], lines
    assert main(["sweep", str(_sweep_file(tmp_path, tiny_dataset)), "--queries", "4"]) == 2
    assert "queries: a sweep of real jobs varies images only" in capsys.readouterr().err


def test_an_images_seen_sweep_reads_a_runs_eval_jsonl_without_training(tiny_dataset, tmp_path):
    """Every point already in <run>/eval.jsonl (as logging.eval_every_images writes it): the sweep
    only reads it, and says so; no Ray, no training."""
    run = tmp_path / "runs" / "tiny"
    run.mkdir(parents=True)
    lines = [{"images_seen": n, "images_seen_at_step": n, "step": n // 4, "fid": fid, "usd": usd, "protocol": {}}
             for n, fid, usd in ((8, 9.5, 0.01), (16, 7.25, 0.02))]
    (run / "eval.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    path = _sweep_file(tmp_path, tiny_dataset, mode="images_seen")
    r = _vlv(["sweep", str(path), "--workdir", str(tmp_path / "out"), "--json"], _env(tmp_path), tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "every point recorded: nothing to train" in r.stdout
    assert "total (the one run, 8 steps): $" in r.stdout  # tiny.yaml's max_steps, past the last point
    rows = json.loads(r.stdout.strip().splitlines()[-1])
    assert [(x["images"], x["steps"], x["recon_fid"], x["usd"]) for x in rows] == [(8, 2, 9.5, 0.01),
                                                                                 (16, 4, 7.25, 0.02)]
    assert rows[1]["est_usd"] > rows[0]["est_usd"] > 0
    assert (tmp_path / "out" / "sweep.png").is_file()


def test_budget_is_refused_for_a_miniature_world_sweep(capsys):
    from vlv_ray.cli import main

    assert main(["sweep", str(JOBS / "toy-sweep.yaml"), "--budget", "5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--budget: for sweeps of real jobs (kind: jobs)" in err[0]


def test_only_a_missing_throughput_gets_the_throughput_hint():
    """The cost model's other errors (here: an instance type the catalog lacks) are reported as
    they are, not as a throughput to set."""
    from vlv_ray.config import load_job
    from vlv_ray.sweep import plan

    tiny = ["cost.instance_type=g5.xlarge", "cost.market=on-demand"]
    e = plan.estimate(load_job(JOBS / "tiny.yaml", tiny), None, "stage2")
    assert e.usd is None and e.where.startswith("no estimate (no measured figure for stage 1 in "), e.where
    assert e.where.endswith("; set stage2.throughput, samples/s per GPU)"), e.where
    e = plan.estimate(load_job(JOBS / "tiny.yaml", ["cost.instance_type=nope"]), 40.0)
    assert e.usd is None and "'nope' is not in the price catalog" in e.where and "throughput" not in e.where, e.where
    e = plan.estimate(load_job(JOBS / "tiny.yaml", tiny), 40.0)
    assert e.usd > 0 and e.where == "2 × g5.xlarge on-demand"  # tiny.yaml: 2 workers


def test_a_sweep_stopped_before_its_workers_start_names_the_command_to_go_on(tiny_dataset, tmp_path, capsys,
                                                                             monkeypatch):
    """A signal before a point's workers start (or a second one) is `preempt.Interrupted`: one line
    with the command that resumes the sweep, as `vlv-ray train` says it."""
    import signal

    from vlv_ray.cli import main
    from vlv_ray.sweep import run
    from vlv_ray.train import preempt

    def interrupted(*a, **kw):
        raise preempt.Interrupted(signal.SIGTERM, "before the workers started (nothing to checkpoint)")

    monkeypatch.setattr(run, "run", interrupted)
    path = _sweep_file(tmp_path, tiny_dataset)
    assert main(["sweep", str(path), "--workdir", str(tmp_path / "out")]) == 128 + signal.SIGTERM
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [f"vlv-ray: stopped by SIGTERM before the workers started (nothing to checkpoint); run the same "
                     f"command to go on: vlv-ray sweep {path} --workdir {tmp_path / 'out'} --yes"], lines
