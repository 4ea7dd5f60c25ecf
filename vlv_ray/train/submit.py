"""`vlv-ray submit`: send a job file to a Ray cluster through Ray's job submission API.

The repo is uploaded as the job's working dir (minus venvs, caches and local data), the
entrypoint is `python -m vlv_ray.cli train JOB key=value…`, and `jobs/runtime_env.yaml`
adds non-secret env vars. Secrets (cloud keys, WANDB_API_KEY) are forwarded from the
submitting shell's environment inside the submit request only: never written to a file,
never printed.
"""
from __future__ import annotations

import os
import shlex
import time
from pathlib import Path
from typing import Any

import yaml

from vlv_ray.config import ConfigError, load_job

REPO = Path(__file__).resolve().parents[2]
SECRET_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "WANDB_API_KEY",
              "GOOGLE_APPLICATION_CREDENTIALS")
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}


def runtime_env(path: Path = REPO / "jobs" / "runtime_env.yaml") -> dict[str, Any]:
    env = yaml.safe_load(path.read_text()) if path.is_file() else {}
    env = dict(env or {})
    env["working_dir"] = str(REPO)
    env_vars = {str(k): str(v) for k, v in (env.get("env_vars") or {}).items()}
    leaked = [k for k in env_vars if k in SECRET_ENV]
    if leaked:
        raise ConfigError(f"{path}: env_vars: {', '.join(leaked)} must not be written in a file; "
                          "export it in the submitting shell instead")
    env_vars.update({k: os.environ[k] for k in SECRET_ENV if os.environ.get(k)})
    env["env_vars"] = env_vars
    return env


def _use_token_auth_if_available() -> None:
    # Ray 2.60's job client leaves token auth off unless RAY_AUTH_MODE says otherwise,
    # although `ray start` turns it on for the cluster: use the local token if there is one.
    if "RAY_AUTH_MODE" not in os.environ and (
            os.environ.get("RAY_AUTH_TOKEN") or Path("~/.ray/auth_token").expanduser().is_file()):
        os.environ["RAY_AUTH_MODE"] = "token"


def submit(job: str, *, address: str | None, overrides: list[str], wait: bool = False,
           timeout_s: float = 3600.0) -> tuple[str, str | None]:
    """Submit; return (submission id, final status or None when not waiting)."""
    from ray.job_submission import JobSubmissionClient

    cfg = load_job(job, overrides)  # fail here, not on the cluster
    job_path = Path(job).resolve()
    try:
        rel = job_path.relative_to(REPO)
    except ValueError:
        raise ConfigError(f"{job}: job files must live inside the project ({REPO}) to be uploaded with it") from None
    address = address or os.environ.get("RAY_API_SERVER_ADDRESS") or os.environ.get("RAY_ADDRESS")
    if not address:
        raise ConfigError("no cluster address: pass --address http://HEAD:8265 or set RAY_API_SERVER_ADDRESS")
    _use_token_auth_if_available()
    client = JobSubmissionClient(address)
    entrypoint = " ".join(shlex.quote(a) for a in ["python", "-m", "vlv_ray.cli", "train", str(rel), *overrides])
    job_id = client.submit_job(entrypoint=entrypoint, runtime_env=runtime_env(),
                               metadata={"vlv_ray_job": cfg.name})
    print(f"submitted {cfg.name} as {job_id}")
    print(f"follow logs: ray job logs --follow --address {address} {job_id}")
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
