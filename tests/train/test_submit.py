"""`vlv-ray submit` against a real local Ray head: the job runs and its checkpoint lands."""
import os
import subprocess
import sys

from helpers import REPO

SECRET = "not-a-real-secret-7f3a9c"


def test_submit_runs_the_tiny_job_and_keeps_secrets_out_of_logs(ray_head, tiny_dataset, tmp_path):
    runs = tmp_path / "runs"
    env = {**os.environ, "AWS_SECRET_ACCESS_KEY": SECRET, "WANDB_API_KEY": SECRET}
    r = subprocess.run(
        [sys.executable, "-m", "vlv_ray.cli", "submit", "jobs/tiny.yaml", f"data.uri={tiny_dataset}",
         f"storage_path={runs}", "name=submitted", "max_steps=3", "checkpoint.every_steps=3",
         "--address", ray_head.dashboard, "--wait"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    job_id = r.stdout.split("submitted submitted as ")[1].split()[0]
    assert f"{job_id}: SUCCEEDED" in r.stdout and "ray job logs --follow" in r.stdout
    assert (runs / "submitted" / "step-00000003" / "trainer_state.json").is_file()

    from ray.job_submission import JobSubmissionClient

    logs = JobSubmissionClient(ray_head.dashboard).get_job_logs(job_id)
    assert "step 3/3" in logs  # the loop's log line reached the job's logs
    assert SECRET not in logs and SECRET not in r.stdout + r.stderr


def test_submit_refuses_secrets_written_in_runtime_env(tmp_path):
    from vlv_ray.config import ConfigError
    from vlv_ray.train.submit import runtime_env

    bad = tmp_path / "runtime_env.yaml"
    bad.write_text("env_vars:\n  WANDB_API_KEY: abc\n")
    import pytest
    with pytest.raises(ConfigError, match="WANDB_API_KEY must not be written in a file"):
        runtime_env(bad)
