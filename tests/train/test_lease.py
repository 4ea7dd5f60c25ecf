"""One driver per run: a second `vlv-ray train` of a held run stops with one line naming the
holder; a lease whose holder died is taken over after the timeout, on disk and on S3."""
import json
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


def test_a_newcomer_with_a_shorter_timeout_does_not_take_a_live_run(tmp_path):
    """Staleness is judged by the holder's own timeout, recorded in the lease: a holder with
    timeout 20 s beats every 5 s, so its lease is often 4 s old and still live."""
    run = str(tmp_path / "runs" / "r")
    first = holder(run, 20)
    try:
        time.sleep(2.5)  # older than the newcomer's 1 s, younger than the holder's 20 s
        with pytest.raises(LeaseHeld, match=f"in use by pid {first.pid}"):
            Lease(run, 3, settle_s=0.2).acquire(say=lambda *a, **k: None)
        held = json.loads((tmp_path / "runs" / "r" / "_LEASE.json").read_text())
        assert (held["timeout_s"], held["heartbeat_s"], held["pid"]) == (20, 5, first.pid)
    finally:
        first.kill()
        first.wait()


def test_taking_over_a_hung_holder_deletes_none_of_its_files_and_fences_it(ray_head, tiny_dataset, tmp_path):
    """A holder that hangs (SIGSTOP: a long GC pause, a frozen VM) past its timeout is taken
    over, but its incomplete checkpoint stays: it could still be writing it. Once it runs again
    it finds the lease taken, and its workers refuse to write (`check_owned`)."""
    runs = tmp_path / "runs"
    run = runs / "hung"
    done = run / "step-00000004"  # a whole checkpoint the newcomer resumes from
    (done / "engine").mkdir(parents=True)
    state = json.dumps({"step": 4})
    (done / "trainer_state.json").write_text(state)
    (done / "_COMPLETE").write_text(json.dumps({"step": 4, "files": {"trainer_state.json": len(state)}}))
    first = holder(str(run), 3)
    in_flight = run / "step-00000006" / "engine" / "zero_pp_rank_0_mp_rank_00_optim_states.pt"
    in_flight.parent.mkdir(parents=True)
    in_flight.write_bytes(b"half of a shard")
    owner = json.loads((run / "_LEASE.json").read_text())["owner"]
    first.send_signal(signal.SIGSTOP)
    try:
        time.sleep(4)
        # The newcomer takes over, resumes from step 4, then stops at the placement check.
        r = subprocess.run([sys.executable, "-m", "vlv_ray.cli", "train", "jobs/tiny.yaml", f"data.uri={tiny_dataset}", f"storage_path={runs}",
                            "name=hung", "scaling.num_workers=16", "scaling.placement_timeout_s=1",
                            "checkpoint.lease_timeout_s=3"],
                           cwd=REPO, capture_output=True, text=True, timeout=300,
                           env={**os.environ, "PYTHONPATH": str(REPO), "RAY_ADDRESS": ray_head.address})
        assert r.returncode == 2 and "could not be placed" in r.stderr, r.stdout[-2000:] + r.stderr[-2000:]
        assert f"taking over the run from pid {first.pid}" in r.stdout, r.stdout
        assert "step-00000006: no _COMPLETE marker (its save did not finish); left it in place" in r.stdout
        assert "step-00000004" not in r.stdout  # the whole one is the resume point, not skipped
        assert in_flight.read_bytes() == b"half of a shard"
        from vlv_ray.train.lease import LeaseLost, check_owned

        with pytest.raises(LeaseLost, match="another driver took over this run"):
            check_owned(str(run), owner)
    finally:
        first.send_signal(signal.SIGCONT)
    time.sleep(3)  # a few of its heartbeats: the first finds the lease taken, and it beats no more
    first.kill()
    said = first.communicate()[0]
    assert "was taken over" in said and "writes none" in said, said
    assert not (run / "_LEASE.json").exists()  # it did not write its lease back
