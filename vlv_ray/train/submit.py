"""`vlv-ray submit`: send a job file to a Ray cluster through Ray's job submission API.

The current directory (the user's job files and code) is uploaded as the job's working
dir, minus venvs, caches and local data; the entrypoint is `exec python -m vlv_ray.cli train
JOB key=value…` with JOB relative to it. `jobs/runtime_env.yaml` there, if present, adds
excludes and non-secret env vars.

Secrets are not forwarded by default: Ray keeps runtime-env variables in plain text in
`ray job list`, the dashboard's jobs API, the head's `runtime_env_agent.log` and the
environment of the job's processes. On a cluster the nodes hold the credentials
(instance profile, workload identity: see cluster/). `--forward-secrets` sends them
anyway, with a warning that says where they will be visible.
"""
from __future__ import annotations

import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from vlv_ray.config import ConfigError, load_job
from vlv_ray.storage import SECRET_ENV
from vlv_ray.train import auth, reach

RUNTIME_ENV_FILE = Path("jobs") / "runtime_env.yaml"
# Used when the submitted directory has no jobs/runtime_env.yaml of its own.
DEFAULT_EXCLUDES = [".venv/", ".cache/", ".git/", "vlv-demo/", "wandb/", "**/__pycache__/"]
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}
STOP_WAIT_S = 600
SECRET_VISIBILITY = ("`ray job list`, the dashboard's jobs API, the head's logs/runtime_env_agent.log "
                     "and the environment of the job's processes")


def runtime_env(path: Path | None = None, *, working_dir: Path | None = None,
                forward_secrets: bool = False) -> dict[str, Any]:
    working_dir = (working_dir or Path.cwd()).resolve()
    path = path or working_dir / RUNTIME_ENV_FILE
    env = dict((yaml.safe_load(path.read_text()) if path.is_file() else None) or {"excludes": DEFAULT_EXCLUDES})
    env["working_dir"] = str(working_dir)
    env_vars = {str(k): str(v) for k, v in (env.get("env_vars") or {}).items()}
    leaked = [k for k in env_vars if k in SECRET_ENV]
    if leaked:
        raise ConfigError(f"{path}: env_vars: {', '.join(leaked)} must not be written in a file; "
                          "give the cluster's nodes credentials (see cluster/) or use --forward-secrets")
    if forward_secrets:
        env_vars.update(secrets_in_env())
    # `ray job stop` sends the driver SIGTERM, then SIGKILL after this many seconds (Ray's
    # default: 3). The driver has every rank checkpoint first (train/preempt.py), which takes
    # longer; a job's runtime_env.yaml can set its own.
    env_vars.setdefault("RAY_JOB_STOP_WAIT_TIME_S", str(STOP_WAIT_S))
    env["env_vars"] = env_vars
    return env


def secrets_in_env() -> dict[str, str]:
    return {k: os.environ[k] for k in SECRET_ENV if os.environ.get(k)}


ADDRESS_ENV = ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS")


def dashboard_address(flag: str | None) -> tuple[str, str]:
    """(the head's dashboard address, where it came from): the --address flag always wins over the
    environment. Not `launch.cluster_address`, which finds the GCS address `ray.init` joins."""
    if flag:
        return flag, "--address"
    for name in ADDRESS_ENV:
        if os.environ.get(name):
            return os.environ[name], name
    raise ConfigError("no cluster address: pass --address http://HEAD:8265 or set RAY_API_SERVER_ADDRESS")


def _check_reachable(address: str, source: str) -> None:
    """In seconds: Ray's client would wait ≈ 35 s and end in a traceback."""
    why = reach.unreachable(address)
    if why:
        raise ConfigError(f"{source} {address}: {why}; expected the head's dashboard, e.g. http://HEAD:8265, "
                          "with the cluster running")


def _client(address: str, source: str = "--address"):
    from ray.exceptions import AuthenticationError, RpcError
    from ray.job_submission import JobSubmissionClient

    _check_reachable(address, source)
    # Ray's client takes RAY_API_SERVER_ADDRESS / RAY_ADDRESS over the address it is given:
    # hide them while it is built, so the address chosen above is the one used.
    saved = {k: os.environ.pop(k) for k in ADDRESS_ENV if k in os.environ}
    try:
        return JobSubmissionClient(address)
    except (ConnectionError, RpcError, TimeoutError):
        raise ConfigError(f"{source} {address}: no Ray dashboard answered; expected the head's "
                          "dashboard, e.g. http://HEAD:8265, with the cluster running") from None
    except AuthenticationError as e:
        raise ConfigError(f"{source} {address}: {_auth_hint(e)}") from None
    finally:
        os.environ.update(saved)


def _auth_hint(e: Exception) -> str:
    if str(e).startswith("Authentication failed"):
        return "the cluster refused our token; use the head's token (`ray get-auth-token` there)"
    return ("the cluster requires a token; put the head's token (`ray get-auth-token` there) in "
            "~/.ray/auth_token or RAY_AUTH_TOKEN")


def submit(job: str, *, address: str | None, overrides: list[str], wait: bool = False,
           forward_secrets: bool = False, timeout_s: float = 3600.0,
           agent_wait_s: float = 90.0) -> tuple[str, str | None]:
    """Submit; return (submission id, final status or None when not waiting)."""
    cfg = load_job(job, overrides)  # fail here, not on the cluster
    workdir = Path.cwd().resolve()
    try:
        rel = Path(job).resolve().relative_to(workdir)
    except ValueError:
        raise ConfigError(f"{job}: the job file must be inside the current directory ({workdir}), "
                          "which is uploaded as the job's working dir") from None
    address, source = dashboard_address(address)
    env = runtime_env(working_dir=workdir, forward_secrets=forward_secrets)
    _say_about_secrets(forward_secrets)
    # Before Ray's job client is imported: it reads the auth mode once.
    auth.use_token_if_available()
    client = _client(address, source)
    # `exec`: Ray runs the entrypoint through `sh -c` and `ray job stop` signals the shell and the
    # children it lists. A stop as the job started once killed the shell alone: the job read
    # STOPPED while its driver, orphaned, trained on and held its workers' CPUs. With exec the
    # shell becomes the driver: the process Ray signals and waits for is the driver itself.
    entrypoint = "exec " + shlex.join(["python", "-m", "vlv_ray.cli", "train", rel.as_posix(), *overrides])
    from ray.exceptions import AuthenticationError

    try:
        job_id = _submit_when_agent_ready(client, address=address, patience_s=agent_wait_s, entrypoint=entrypoint,
                                          runtime_env=env, metadata={"vlv_ray_job": cfg.name})
    except AuthenticationError as e:
        raise ConfigError(f"--address {address}: {_auth_hint(e)}") from None
    print(f"submitted {cfg.name} as {job_id}")
    print(f"follow logs: {auth.cli_prefix()}ray job logs --follow --address {address} {job_id}")
    if not wait:
        return job_id, None
    deadline = time.time() + timeout_s
    status = str(client.get_job_status(job_id))
    while status.split(".")[-1] not in TERMINAL and time.time() < deadline:
        time.sleep(2)
        status = str(client.get_job_status(job_id))
    status = status.split(".")[-1]
    print(f"{job_id}: {status}")
    return job_id, status


def _submit_when_agent_ready(client, *, address: str, patience_s: float = 90.0, **job) -> str:
    """Submit; while the head answers that no job agent is up yet (a head that has just started,
    or a loaded one: Ray says "try again later"), wait and retry, saying so once."""
    deadline = time.time() + patience_s
    said = False
    while True:
        try:
            return client.submit_job(**job)
        except RuntimeError as e:
            if "No available agent" not in str(e):
                raise
            if not said:
                print(f"the head's job agent is not up yet: retrying for up to {patience_s:.0f}s", flush=True)
                said = True
            if time.time() > deadline:
                raise ConfigError(
                    f"--address {address}: the head's job agent did not come up in {patience_s:.0f} s; its log is "
                    "session_latest/logs/dashboard_agent.log in the head's temp dir. A second Ray head on one "
                    "machine finds the agent's port (52365) taken: start it with --dashboard-agent-listen-port=PORT"
                ) from None
            time.sleep(3)


def _say_about_secrets(forward_secrets: bool) -> None:
    names = ", ".join(secrets_in_env())
    if not names:
        return
    if forward_secrets:
        print(f"vlv-ray: warning: forwarding {names} to the job: the values will be visible in "
              f"{SECRET_VISIBILITY}", file=sys.stderr)
    else:
        print(f"vlv-ray: not forwarding {names}: the cluster's nodes supply credentials "
              "(instance profile, workload identity); --forward-secrets sends these instead", file=sys.stderr)
