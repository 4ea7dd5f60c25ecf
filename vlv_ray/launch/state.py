"""What `vlv-ray launch` remembers about a cluster it started: `~/.vlv-ray/launches/<name>.json`.

One file per launch name, rewritten atomically at every change (cluster up, job submitted,
pool switched, torn down), so a launch interrupted anywhere can be re-attached by running
the same command again, and `--status` / `--down NAME` find every cluster still billing.
Beside it: `<name>.yaml` (the rendered cluster file in use), `<name>.log` (the job's log
lines as followed), `<name>.ledger.json` (the cluster's cost ledger), `<name>.lock`.
"""
from __future__ import annotations

import fcntl
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vlv_ray.config import ConfigError


def launches_dir() -> Path:
    return Path.home() / ".vlv-ray" / "launches"


@dataclass
class LaunchState:
    name: str
    job: str  # the job file, absolute
    overrides: list[str]
    cluster: str  # the cluster template, absolute
    backend: str  # local | cloud
    provider: str
    status: str = "starting"  # starting | up | running | tearing-down | down
    created_at: float = field(default_factory=time.time)
    up_started_at: float | None = None  # billing starts here (the head is launched by `ray up`)
    down_at: float | None = None
    head: dict[str, Any] = field(default_factory=dict)  # backend-specific: pids, ports, temp dir, dashboard
    dashboard: str | None = None  # http URL the launcher reaches the head's dashboard at
    job_id: str | None = None
    job_status: str | None = None
    budget_usd: float | None = None
    keep: bool = False
    pool: str | None = None  # the worker type the autoscaler may launch now
    pool_since: float | None = None
    switches: list[dict[str, Any]] = field(default_factory=list)
    ended: str | None = None  # succeeded | failed | budget | interrupted | down

    # ------------------------------------------------------------------ files

    @property
    def path(self) -> Path:
        return launches_dir() / f"{self.name}.json"

    def sibling(self, suffix: str) -> Path:
        return launches_dir() / f"{self.name}{suffix}"

    def fingerprint(self) -> tuple:
        return (self.job, tuple(self.overrides), self.cluster)

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(asdict(self), indent=1))
        os.replace(tmp, self.path)

    @classmethod
    def load(cls, name: str) -> "LaunchState | None":
        p = launches_dir() / f"{name}.json"
        if not p.is_file():
            return None
        try:
            return cls(**json.loads(p.read_text()))
        except (ValueError, TypeError):
            raise ConfigError(f"{p}: not a launch state file (remove it if no cluster of that name is up)") from None


def all_states() -> list[LaunchState]:
    if not launches_dir().is_dir():
        return []
    out = []
    for p in sorted(launches_dir().glob("*.json")):
        if p.name.endswith(".ledger.json"):
            continue
        st = LaunchState.load(p.stem)
        if st is not None:
            out.append(st)
    return out


class Lock:
    """One launcher per name at a time: a second `launch` of the same name (a second terminal)
    says who holds it instead of driving the cluster twice. The OS releases it with the process."""

    def __init__(self, name: str):
        launches_dir().mkdir(parents=True, exist_ok=True)
        self.path = launches_dir() / f"{name}.lock"
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(self.fd, 64).decode(errors="replace").strip() or "?"
            os.close(self.fd)
            raise ConfigError(f"launch {name}: another vlv-ray launch (pid {holder}) is following it; "
                              "wait for it or stop it") from None
        os.ftruncate(self.fd, 0)
        os.write(self.fd, str(os.getpid()).encode())

    def release(self) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
