"""What many tests share: where the repo and its job files are, a free port, the tiny job,
and the training callbacks tests use (trace of keys trained on, a worker SIGKILLed or
SIGTERMed after a step). Import it as `helpers` (tests/ is on sys.path through conftest.py);
Ray workers import the callbacks as `tests.helpers` (the driver's cwd, the repo, is on
their path).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

# A free port, and the flags that give a second Ray head its own agent ports (Ray's are fixed:
# the job agent's 52365): the launcher's own, which starts local heads the same way.
from vlv_ray.launch.backend import free_port, own_port_flags  # noqa: F401

REPO = Path(__file__).resolve().parents[1]
JOBS = REPO / "jobs"


def vlv(args: list[str], env: dict, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    """`vlv-ray ARGS…` as a user runs it: a subprocess in `cwd` with the environment `env`."""
    return subprocess.run([sys.executable, "-m", "vlv_ray.cli", *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)


def tiny_job(dataset, runs, *overrides):
    from vlv_ray.config import load_job

    return load_job(JOBS / "tiny.yaml", [f"data.uri={dataset}", f"storage_path={runs}", *overrides])


# ---------------------------------------------------------------------------- callbacks


def callbacks(*specs: tuple[str, dict]) -> str:
    """A `callbacks=[...]` override for classes of this module: ("TraceKeys", {"file": ...}), …"""
    return "callbacks=" + json.dumps([{"path": f"tests.helpers:{name}", "args": args} for name, args in specs])


def trace(path: Path) -> str:
    return callbacks(("TraceKeys", {"file": str(path)}))


class TraceKeys:
    """Appends `rank step key,key,…` per step: which steps ran, on which rows."""

    def __init__(self, file: str):
        self.file = file

    def on_step_end(self, event) -> None:
        with open(self.file, "a") as f:
            f.write(f"{event.rank} {event.step} {','.join(event.keys)}\n")


class KillAfter:
    """SIGKILL: a worker dying without warning after `step` (first run only, not on resume)."""

    def __init__(self, step: int, rank: int = 0):
        self.step, self.rank = step, rank

    def on_step_end(self, event) -> None:
        if (event.step, event.rank, event.resumed) == (self.step, self.rank, False):
            os.kill(os.getpid(), signal.SIGKILL)


class SigtermAfter:
    """A real SIGTERM (a spot notice) to this worker after `step`, first run only; returns once
    the worker's handler has run, so the loop's stop decision of this very step sees it."""

    def __init__(self, step: int, rank: int = 0, timeout_s: float = 10.0):
        self.step, self.rank, self.timeout_s = step, rank, timeout_s

    def on_step_end(self, event) -> None:
        from vlv_ray.train import preempt

        if (event.step, event.rank, event.resumed) != (self.step, self.rank, False):
            return
        os.kill(os.getpid(), signal.SIGTERM)
        deadline = time.time() + self.timeout_s
        while not preempt.pending():
            if time.time() > deadline:
                raise RuntimeError("SIGTERM handler did not run: is it installed on the main thread?")
            time.sleep(0.01)


class KillInSave:
    """SIGKILL this worker at `phase` of the save of `step`, once (a flag file records it)."""

    def __init__(self, phase: str, rank: int, step: int, once_file: str):
        self.phase, self.rank, self.step, self.once_file = phase, rank, step, once_file

    def on_step_end(self, event) -> None:
        pass

    def on_checkpoint_phase(self, event) -> None:
        if (event.phase, event.rank, event.step) != (self.phase, self.rank, self.step) or os.path.exists(self.once_file):
            return
        Path(self.once_file).write_text(event.phase)
        os.kill(os.getpid(), signal.SIGKILL)


def steps_run(path: Path) -> dict[int, list[int]]:
    """Steps each rank ran, in order, from a TraceKeys file."""
    by_rank = defaultdict(list)
    for line in path.read_text().splitlines():
        rank, step = map(int, line.split()[:2])
        by_rank[rank].append(step)
    return dict(by_rank)


def keys_seen(path: Path, rank: int | None = None) -> list[str]:
    """Every key trained on, in trace order (optionally one rank's only)."""
    return [k for line in path.read_text().splitlines()
            if rank is None or int(line.split()[0]) == rank for k in line.split()[2].split(",")]


def descendants(pid: int) -> list[int]:
    """Every process below `pid`, by parent id: the autoscaler starts fake nodes from a thread,
    so they are not in /proc/<pid>/task/<pid>/children."""
    parent = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parent[int(stat.parent.name)] = int(fields[1])
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        kids = [c for c, pp in parent.items() if pp == p]
        out += kids
        todo += kids
    return out


def fake_raylets(head_pid: int, node_id: str | None = None) -> list[int]:
    """The raylets of the fake nodes below a head started with Ray's fake multi-node provider
    (or of the one node `node_id`): the autoscaler starts each with its node id in its environment."""
    var = b"RAY_OVERRIDE_NODE_ID_FOR_TESTING="
    out = []
    for pid in descendants(head_pid):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"/raylet/raylet" in cmd and any(e == var + node_id.encode() if node_id else e.startswith(var)
                                             for e in environ):
            out.append(pid)
    return out


def preempt(raylet: int) -> None:
    """A spot preemption of a fake node: its raylet and every process on it die at once."""
    for pid in [raylet, *descendants(raylet)]:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

