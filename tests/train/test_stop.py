"""A driver told to stop (SIGTERM from a scheduler or `ray job stop`, Ctrl-C) has every rank
checkpoint its current step, then ends with one line saying where it stopped and how to
resume, exit 128 + the signal's number; and every line the driver prints shows in its log
file while the run lives, not at exit."""
import re
import signal
import subprocess
import time

import pytest

from conftest import user_env  # tests/ is on sys.path: its conftest.py is there
from helpers import REPO

from vlv_ray.train import integrity

STEP = re.compile(r"step (\d+)/200 \|")


def _wait_for_step(log, proc, timeout_s: float = 300.0) -> int:
    """The newest step line in `log` once one is there, while `proc` still runs."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        steps = [int(m.group(1)) for m in STEP.finditer(log.read_text())]
        if steps:
            return steps[-1]
        assert proc.poll() is None, f"the run ended before a step line showed:\n{log.read_text()[-3000:]}"
        time.sleep(0.5)
    raise AssertionError(f"no step line in {log} after {timeout_s}s while the run lived:\n{log.read_text()[-3000:]}")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_to_a_driver_checkpoints_every_rank_and_says_how_to_resume(sig, ray_head, tiny_dataset, tmp_path):
    """SIGTERM as a scheduler sends it; SIGINT as Ctrl-C does (Ray Train's own handler would
    abort the workers without a checkpoint)."""
    runs, out, err = tmp_path / "runs", tmp_path / "out.log", tmp_path / "err.log"
    args = ["vlv-ray", "train", "jobs/tiny.yaml", f"data.uri={tiny_dataset}", f"storage_path={runs}", "name=stopme",
            "max_steps=200", "checkpoint.every_steps=100", "optim.warmup_steps=0"]
    # Attached to the session's head (RAY_ADDRESS), stdout and stderr files as with `… > log &`.
    with out.open("w") as o, err.open("w") as e:
        proc = subprocess.Popen(args, cwd=REPO, env=user_env(tmp_path / "home", RAY_ADDRESS=ray_head.address),
                                stdout=o, stderr=e)
    try:
        seen = _wait_for_step(out, proc)  # the step lines reach the file as they are printed
        proc.send_signal(sig)
        rc = proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert rc == 128 + sig, err.read_text()[-3000:]
    last = err.read_text().strip().splitlines()[-1]
    m = re.fullmatch(rf"vlv-ray: stopped by {sig.name} at step (\d+), checkpoint (\S+); resume with the same "
                     r"command: (.*)", last)
    assert m, err.read_text()[-3000:]
    step = int(m.group(1))
    assert seen <= step < 200
    assert m.group(3) == " ".join(args)
    ckpt = runs / "stopme" / f"step-{step:08d}"
    assert m.group(2) == str(ckpt)
    assert integrity.problem(str(ckpt)) is None  # every rank's files, marked complete
    assert f"[vlv-ray] {sig.name}: every worker checkpoints its current step" in out.read_text()
    assert not (runs / "stopme" / "_LEASE.json").exists()  # released: the resume needs no wait



def test_a_signal_before_the_workers_start_ends_with_one_line_and_releases_the_lease(ray_head, tiny_dataset, tmp_path):
    """SIGTERM (`ray job stop`, a scheduler) while the driver still prepares: it used to die the
    default way, silently, leaving its lease for the next driver to wait out. Here the driver
    waits for 16 workers the cluster cannot place (64 rows: one batch of 4 each), so the workers
    never start."""
    runs, out, err = tmp_path / "runs", tmp_path / "out.log", tmp_path / "err.log"
    args = ["vlv-ray", "train", "jobs/tiny.yaml", f"data.uri={tiny_dataset}", f"storage_path={runs}", "name=early",
            "scaling.num_workers=16", "scaling.placement_timeout_s=300"]
    lease = runs / "early" / "_LEASE.json"
    with out.open("w") as o, err.open("w") as e:
        proc = subprocess.Popen(args, cwd=REPO, env=user_env(tmp_path / "home", RAY_ADDRESS=ray_head.address),
                                stdout=o, stderr=e)
    try:
        deadline = time.time() + 120
        while "[vlv-ray] waiting up to 300 s (scaling.placement_timeout_s) for room for 16 workers" not in \
                out.read_text():
            assert proc.poll() is None and time.time() < deadline, err.read_text()[-3000:]
            time.sleep(0.1)
        assert lease.exists()
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=60)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
    assert rc == 128 + signal.SIGTERM, err.read_text()[-3000:]
    assert err.read_text().strip().splitlines() == [
        "vlv-ray: stopped by SIGTERM before the workers started (nothing to checkpoint); run the same command "
        f"to go on: {' '.join(args)}"]
    assert took < 30, took
    assert not lease.exists()  # released: the next driver need not wait out its timeout


def test_a_signal_at_any_moment_of_the_start_up_ends_with_exit_143_and_one_line(ray_head, tiny_dataset, tmp_path):
    """SIGTERM while the driver joins Ray, waits for room, starts its cost tracker and trainer
    (moments spread over its start-up on this box). A signal raised inside a Ray call used to
    come out as a bare KeyboardInterrupt ('vlv-ray: interrupted', exit 130), or to kill the
    process outright (-15, -11) with its lease left behind."""
    lines = ("vlv-ray: stopped by SIGTERM before the workers started (nothing to checkpoint); run the same command",
             "vlv-ray: stopped by SIGTERM at step ")
    for i, delay in enumerate((3.0, 3.5, 4.0, 4.5, 5.0)):
        runs, err = tmp_path / f"runs{i}", tmp_path / f"err{i}.log"
        with err.open("w") as e:
            proc = subprocess.Popen(
                ["vlv-ray", "train", "jobs/tiny.yaml", f"data.uri={tiny_dataset}", f"storage_path={runs}", "name=s"],
                cwd=REPO, env=user_env(tmp_path / "home", RAY_ADDRESS=ray_head.address), stdout=subprocess.DEVNULL,
                stderr=e)
        try:
            time.sleep(delay)
            if proc.poll() is not None:
                break  # a box fast enough to finish first: nothing later to try
            proc.send_signal(signal.SIGTERM)
            rc = proc.wait(timeout=300)
        finally:
            if proc.poll() is None:
                proc.kill()
        said = err.read_text().strip().splitlines()
        assert not (runs / "s" / "_LEASE.json").exists(), (delay, rc, said[-20:])  # released, or never taken
        if rc == -signal.SIGTERM:  # before the driver set its handlers: Python's default (it held nothing)
            continue
        assert rc == 128 + signal.SIGTERM and said and said[-1].startswith(lines), (delay, rc, said[-20:])
