"""One driver per run: a second `vlv-ray train` of a held run stops with one line naming the
holder; a lease whose holder died is taken over after the timeout, on disk and on S3."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vlv_ray.train.lease import Lease, LeaseHeld

REPO = Path(__file__).resolve().parents[2]

HOLD = """
import sys, time
from vlv_ray.train.lease import Lease
kw = {"endpoint_url": sys.argv[3]} if len(sys.argv) > 3 else {}
Lease(sys.argv[1], float(sys.argv[2]), settle_s=0.2, **kw).acquire()
print("held", flush=True)
time.sleep(600)
"""


def holder(run: str, timeout_s: float, *extra: str) -> subprocess.Popen:
    """Another driver: a real process holding the lease with its heartbeat thread."""
    p = subprocess.Popen([sys.executable, "-c", HOLD, run, str(timeout_s), *extra], stdout=subprocess.PIPE,
                         text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert p.stdout.readline().strip() == "held"
    return p


def test_second_run_of_a_held_name_fails_in_one_line_naming_the_holder(tiny_dataset, tmp_path):
    run = tmp_path / "runs" / "shared"
    first = holder(str(run), 4)
    try:
        time.sleep(2)  # past a heartbeat or two: the lease stays live
        r = subprocess.run([sys.executable, "-m", "vlv_ray.cli", "train", "jobs/tiny.yaml", "name=shared",
                            f"storage_path={tmp_path / 'runs'}", f"data.uri={tiny_dataset}",
                            "checkpoint.lease_timeout_s=4"],
                           cwd=REPO, capture_output=True, text=True, timeout=120,
                           env={**os.environ, "PYTHONPATH": str(REPO), "RAY_ADDRESS": "127.0.0.1:1"})
        assert r.returncode == 2, r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("vlv-ray: error: "), r.stderr
        assert f"in use by pid {first.pid}" in lines[0] and "_LEASE.json" in lines[0]
        assert not list(run.glob("step-*"))  # it touched nothing
    finally:
        first.kill()
        first.wait()
    # The holder died without releasing: its lease goes stale and is taken over, logged.
    said = []
    with pytest.raises(LeaseHeld):
        Lease(str(run), 4, settle_s=0.2).acquire(say=lambda *a, **k: said.append(a[0]))
    time.sleep(4.5)
    lease = Lease(str(run), 4, settle_s=0.2).acquire(say=lambda *a, **k: said.append(a[0]))
    try:
        assert len(said) == 1 and f"taking over the run from pid {first.pid}" in said[0] and "stale" in said[0]
    finally:
        lease.release()
    assert not (run / "_LEASE.json").exists()


def test_lease_on_s3_is_exclusive_and_taken_over_when_stale(s3_bucket):
    from vlv_ray import storage

    endpoint, bucket = s3_bucket
    run = f"s3://{bucket}/runs/x"
    first = holder(run, 3, endpoint)
    try:
        time.sleep(1.5)
        with pytest.raises(LeaseHeld, match=f"pid {first.pid}"):
            Lease(run, 3, settle_s=0.2, endpoint_url=endpoint).acquire()
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    time.sleep(3.5)
    said = []
    lease = Lease(run, 3, settle_s=0.2, endpoint_url=endpoint).acquire(say=lambda *a, **k: said.append(a[0]))
    assert len(said) == 1 and f"pid {first.pid}" in said[0]
    lease.release()
    assert not storage.exists(f"{run}/_LEASE.json", endpoint_url=endpoint)
