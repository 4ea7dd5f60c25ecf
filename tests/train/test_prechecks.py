"""`vlv-ray train` as a user runs it: bad input is one line and exit 2, found on the driver
before any worker starts; a worker's failure is one line naming its root cause."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vlv_ray.config import load_job
from vlv_ray.models import export
from vlv_ray.models.presets import build_stage1
from vlv_ray.train import launch

REPO = Path(__file__).resolve().parents[2]


def train(*args, address="127.0.0.1:1", timeout=300):
    """The CLI in a subprocess; the default address is unreachable: nothing may need Ray."""
    t0 = time.time()
    r = subprocess.run([sys.executable, "-m", "vlv_ray.cli", "train", "jobs/tiny.yaml", *map(str, args)],
                       cwd=REPO, capture_output=True, text=True, timeout=timeout,
                       env={**os.environ, "PYTHONPATH": str(REPO), "RAY_ADDRESS": address})
    r.seconds = time.time() - t0
    return r


def one_line(r, code, *needles):
    assert r.returncode == code, r.stdout[-1500:] + r.stderr[-1500:]
    errors = [line for line in r.stderr.splitlines() if line.startswith("vlv-ray: error: ")]
    # Ray streams the workers' own output above it; nothing after it, and no traceback of ours.
    assert len(errors) == 1 and r.stderr.strip().splitlines()[-1] == errors[0], r.stderr[-3000:]
    assert "vlv_ray/cli" not in r.stderr, r.stderr[-3000:]
    for n in needles:
        assert n in errors[0], errors[0]
    return errors[0]


@pytest.fixture
def readonly_dir(tmp_path):
    """A directory nobody can write: a read-only tmpfs for root (root ignores modes), else mode 555."""
    d = tmp_path / "ro"
    d.mkdir()
    if os.geteuid() == 0:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(d)], check=True)
        yield d
        subprocess.run(["umount", str(d)], check=True)
    else:
        d.chmod(0o555)
        yield d
        d.chmod(0o755)


def test_storage_path_read_only_or_under_a_file(tiny_dataset, tmp_path, readonly_dir):
    one_line(train(f"data.uri={tiny_dataset}", f"storage_path={readonly_dir / 'runs'}"), 2,
             "storage_path=", "cannot write the run directory")
    (tmp_path / "afile").write_text("x")
    one_line(train(f"data.uri={tiny_dataset}", f"storage_path={tmp_path / 'afile' / 'runs'}"), 2,
             "storage_path=", "afile")


def test_stage2_with_a_missing_or_wrong_stage1_export(tiny_dataset, tmp_path):
    args = ["stage=2", f"data.uri={tiny_dataset}", f"storage_path={tmp_path}"]
    one_line(train(*args, f"model.stage1={tmp_path / 'nope'}"), 2, "model.stage1:", "not a vlv-ray export")
    encoder, _ = build_stage1("tiny", resolution=32)
    export.save(str(tmp_path / "s1"), {n: p for n, p in encoder.named_parameters() if p.requires_grad},
                {"kind": "vlv-stage1", "preset": "tiny", "num_queries": 77, "resolution": 64, "seed": 0,
                 "step": 1, "config_hash": "x", "job": "t"})
    one_line(train(*args, f"model.stage1={tmp_path / 's1'}"), 2, "data.resolution: got 32", "trained at 64")


def test_more_workers_than_the_cluster_can_place(ray_head, tiny_dataset, tmp_path):
    r = train(f"data.uri={tiny_dataset}", f"storage_path={tmp_path}", "scaling.num_workers=9",
              "checkpoint.max_failures=0", "scaling.placement_timeout_s=5", address=ray_head.address)
    one_line(r, 2, "scaling.num_workers: 9 workers", "placement_timeout_s=5", "CPU 4")
    assert r.seconds < 90
    assert not (tmp_path / "tiny" / "_LEASE.json").exists()  # released on the way out


def test_worker_failure_is_one_line_with_the_traceback_in_the_run(ray_head, tiny_dataset, tmp_path):
    # The stage-1 weights file is cut short: the driver checks only vlv.json (the weights can
    # be gigabytes), so the workers fail on loading it.
    encoder, _ = build_stage1("tiny", resolution=32)
    export.save(str(tmp_path / "s1"), {n: p for n, p in encoder.named_parameters() if p.requires_grad},
                {"kind": "vlv-stage1", "preset": "tiny", "num_queries": 77, "resolution": 32, "seed": 0,
                 "step": 1, "config_hash": "x", "job": "t"})
    weights = tmp_path / "s1" / export.WEIGHTS_FILE
    weights.write_bytes(weights.read_bytes()[:1000])
    r = train("stage=2", f"data.uri={tiny_dataset}", f"storage_path={tmp_path / 'runs'}", "name=broken",
              f"model.stage1={tmp_path / 's1'}", "checkpoint.max_failures=0", address=ray_head.address)
    line = one_line(r, 1, "training failed: rank ", "ExportError", "trainable.safetensors: not a readable")
    log = Path(line.split("full traceback in ")[1])
    assert log.parent == tmp_path / "runs" / "broken" / "logs" and "Traceback" in log.read_text()


def test_resume_with_changed_settings_is_refused_or_recorded(ray_cluster, tiny_dataset, tmp_path):
    base = [f"data.uri={tiny_dataset}", f"storage_path={tmp_path}", "name=changing", "checkpoint.every_steps=2",
            "optim.warmup_steps=1"]
    assert launch.run(load_job(REPO / "jobs" / "tiny.yaml", [*base, "max_steps=2"])).error is None
    line = one_line(train(*base, "max_steps=4", "optim.lr=2e-4", "seed=3"), 2, "step-00000002",
                    "optim.lr 0.001 -> 0.0002", "seed 0 -> 3", "--allow-changes")
    assert "max_steps" not in line  # running longer is a resume, not a change
    r = train(*base, "max_steps=4", "optim.lr=2e-4", "--allow-changes", address=ray_cluster.get_runtime_context()
              .gcs_address, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resuming step 2 with changed settings (optim.lr)" in r.stdout
    history = [json.loads(x) for x in (tmp_path / "changing" / "history.jsonl").read_text().splitlines()]
    assert history[0]["step"] == 2 and history[0]["changes"] == {"optim.lr": [0.001, 0.0002]}
    state = json.loads((tmp_path / "changing" / "step-00000004" / "trainer_state.json").read_text())
    assert state["config"]["optim"]["lr"] == 0.0002  # the next resume compares with the new settings
