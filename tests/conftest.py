"""Shared fixtures: one real local Ray head for the whole session, started and stopped by PID.

`ray start --head --block` runs in a process group of its own; teardown signals that
group and every process descending from it, and nothing else on the machine.

Every test that uses a Ray fixture is marked `integration` here (tests that start
DeepSpeed without Ray carry the mark themselves): `make test-fast` leaves them out.
"""
from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from helpers import REPO, free_port, own_port_flags

from vlv_ray.launch import backend
# DeepSpeed compiles C++ ops on first use; keep them in the repo's cache, not ~.
os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(REPO / ".cache" / "torch_extensions"))
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# Ray 2.60 turns token auth on. This session's head runs with one token; clients here find
# it as a user's do (a token, no RAY_AUTH_MODE exported: vlv-ray turns token auth on when a
# token is there), so the path a user takes is the one tested. Subprocesses that stand in
# for a user get a clean environment instead (`user_env`), with the token in ~/.ray.
RAY_TOKEN = secrets.token_hex(32)
os.environ["RAY_AUTH_TOKEN"] = RAY_TOKEN
# Fake credentials for the local S3 server, set before the Ray head starts so that Ray
# workers inherit them exactly as they would a cluster's instance credentials.
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")


RAY_FIXTURES = {"ray_head", "ray_cluster", "fresh_ray_head"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if RAY_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


def _descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            kids = Path(f"/proc/{p}/task/{p}/children").read_text().split()
        except OSError:
            continue
        out += [int(k) for k in kids]
        todo += [int(k) for k in kids]
    return out


def stop_process_tree(proc: subprocess.Popen, grace_s: float = 20.0) -> None:
    pids = _descendants(proc.pid)
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        pass
    for pid in [proc.pid, *pids, *_descendants(proc.pid)]:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@dataclass
class RayHead:
    address: str  # GCS address for ray.init
    dashboard: str  # http URL for job submission
    temp_dir: Path  # the head's --temp-dir: its session logs live under it


def user_env(home: Path, **extra: str) -> dict[str, str]:
    """The environment of a user's fresh shell: the project's venv on PATH, a HOME holding
    the cluster's token in ~/.ray/auth_token, and nothing Ray-specific exported."""
    (home / ".ray").mkdir(parents=True, exist_ok=True)
    (home / ".ray" / "auth_token").write_text(RAY_TOKEN)
    env = {"PATH": f"{Path(sys.executable).parent}{os.pathsep}/usr/local/bin:/usr/bin:/bin",
           "HOME": str(home), "LANG": "C.UTF-8", "WANDB_MODE": "disabled"}
    if os.environ.get("PYTHONPATH"):  # a worktree's checkout shadowing the installed package
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return {**env, **extra}


def _wait_port(port: int, proc: subprocess.Popen, log: Path, timeout_s: float = 90.0, what: str = "ray head") -> None:
    """The launcher's own wait (vlv_ray/launch/backend.py); a failure names `what` and carries its log tail."""
    try:
        backend._wait_port(port, proc, log, timeout_s)
    except backend.ClusterFailed:
        how = "exited early" if proc.poll() is not None else f"did not open port {port} in {timeout_s:.0f} s"
        raise RuntimeError(f"{what} {how}:\n{log.read_text()[-3000:]}") from None


@contextlib.contextmanager
def start_ray_head(*flags: str):
    """A real `ray start --head` with its dashboard, in a temp dir of its own; stopped by PID.
    `flags` go last, so they override the head's own agent ports."""
    tmp = Path(tempfile.mkdtemp(prefix="vlvray-", dir="/tmp"))  # short: unix socket paths are capped
    port, dash = free_port(), free_port()
    # The head is started the way the README says: the project's environment on PATH, so
    # a job's `python` and `vlv-ray` are the project's; its token only in its own env.
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": RAY_TOKEN}
    log = tmp / "head.log"
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "ray"), "start", "--head", "--block", f"--port={port}",
         "--node-ip-address=127.0.0.1", f"--dashboard-port={dash}", "--dashboard-host=127.0.0.1",
         "--include-dashboard=true", "--num-cpus=4", f"--temp-dir={tmp}", "--disable-usage-stats",
         *own_port_flags(), *flags],
        stdout=log.open("w"), stderr=subprocess.STDOUT, env=env, start_new_session=True, cwd=tmp)
    try:
        _wait_port(port, proc, log)
        _wait_port(dash, proc, log)
        yield RayHead(address=f"127.0.0.1:{port}", dashboard=f"http://127.0.0.1:{dash}", temp_dir=tmp)
    finally:
        stop_process_tree(proc)
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="session")
def ray_head():
    """A real Ray head shared by every test that needs Ray."""
    with start_ray_head() as head:
        try:
            yield head
        finally:
            import ray

            ray.shutdown()


@pytest.fixture(scope="module")
def fresh_ray_head():
    """A head of the module's own, as a user's cluster is when they submit: nothing but this
    module's jobs in its temp dir, which the secret search reads."""
    with start_ray_head() as head:
        yield head


@pytest.fixture(scope="session")
def ray_cluster(ray_head):
    """This test process connected to the shared head as a Ray driver."""
    import ray

    from vlv_ray.train.launch import ensure_ray

    ensure_ray(address=ray_head.address)
    yield ray


@pytest.fixture
def process_group_of_one(monkeypatch):
    """A gloo process group of one in this test's process, ended the way the trainer ends its own."""
    import torch.distributed as dist

    from vlv_ray.train.engine import destroy_process_group

    for k, v in dict(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), RANK="0", WORLD_SIZE="1",
                     LOCAL_RANK="0").items():
        monkeypatch.setenv(k, v)
    dist.init_process_group("gloo")
    try:
        yield
    finally:
        destroy_process_group()


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    """64 synthetic images as parquet shards (4 of 16) with a manifest.

    64 rows = 8 batches of 4 per worker with 2 workers: the short test runs stay inside
    one epoch, since each new epoch restarts Ray Data's streaming split (~10 s here).
    """
    from vlv_ray.data import shards, synthetic

    root = tmp_path_factory.mktemp("tiny-ds")
    synthetic.write_images(root / "img", n=64, seed=1)
    shards.prepare(str(root / "img"), str(root / "data"), shard_rows=16, row_group_rows=8, progress=False)
    return root / "data"


@pytest.fixture(scope="session")
def s3_endpoint():
    """moto's standalone S3 server on 127.0.0.1 (random port), stopped by PID at the end."""
    port = free_port()
    log = Path(tempfile.mkdtemp(prefix="vlvmoto-")) / "moto.log"
    proc = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_port(port, proc, log, timeout_s=60, what="moto server")
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process_tree(proc, grace_s=5)


@pytest.fixture
def s3_bucket(s3_endpoint):
    """A fresh bucket on the local S3 server: (endpoint, bucket name)."""
    import boto3

    name = f"vlv-{secrets.token_hex(4)}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=name)
    return s3_endpoint, name
