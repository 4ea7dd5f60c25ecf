"""`vlv-ray launch` without a cluster: the dry run for AWS and GCP (the commands, and a rendered
file that Ray's own schema accepts), and every kind of bad input as one line and exit 2, found
before anything starts. Each runs the CLI from a user's shell (a clean environment)."""
import json
import subprocess
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml

from conftest import user_env
from helpers import REPO

CLUSTER = REPO / "cluster"
S3_JOB = ["storage_path=s3://my-bucket/runs", "data.uri=s3://my-bucket/data"]


def launch(*args, home: Path, cwd: Path = REPO, **env) -> subprocess.CompletedProcess:
    return subprocess.run(["vlv-ray", "launch", *map(str, args)], cwd=cwd, env=user_env(home, **env),
                          capture_output=True, text=True, timeout=120)


def one_line_error(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 2, r.stdout[-2000:] + r.stderr[-2000:]
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vlv-ray: error: "), r.stderr
    return lines[0]


def rendered(stdout: str) -> dict:
    return yaml.safe_load(stdout.split("--- rendered cluster file\n", 1)[1])


@pytest.mark.parametrize("cloud, env", [
    ("aws", {"AWS_ACCESS_KEY_ID": "AKIAFAKE", "AWS_SECRET_ACCESS_KEY": "fake"}),
    ("gcp", {"VLV_GCP_PROJECT": "my-project-123"}),
])
def test_dry_run_prints_the_commands_and_a_rendered_file_rays_schema_accepts(cloud, env, tmp_path):
    home = tmp_path / "home"
    if cloud == "gcp":  # application-default credentials, as `gcloud auth application-default login` leaves them
        (home / ".config" / "gcloud").mkdir(parents=True)
        (home / ".config" / "gcloud" / "application_default_credentials.json").write_text("{}")
    r = launch("jobs/stage1-paper.yaml", *S3_JOB, "--cluster", CLUSTER / f"{cloud}-spot.yaml", "--dry-run",
               "--allow-on-demand", "--budget", "500", home=home, **env)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    state_file = home / ".vlv-ray" / "launches" / "stage1-paper.yaml"
    for command in (f"ray up -y {state_file}", f"ray down -y {state_file}", f"ray get-head-ip {state_file}",
                    f"ray exec {state_file} 'ray get-auth-token'", f"ray up -y --no-restart {state_file}",
                    "vlv-ray submit jobs/stage1-paper.yaml --address <dashboard>"):
        assert command in r.stdout, command
    assert "[launch] estimate: " in r.stdout
    cfg = rendered(r.stdout)
    jsonschema.validate(cfg, json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text()))
    assert "${" not in yaml.safe_dump(cfg)
    workers = {t: s for t, s in cfg["available_node_types"].items() if t != cfg["head_node_type"]}
    on = [t for t, s in workers.items() if s["max_workers"] > 0]
    pools = r.stdout.split("tries them: ")[1].splitlines()[0]
    assert len(on) == 1 and pools.startswith(on[0])  # the first pool only: fallback switches the others on
    assert "on-demand" in pools and pools.index("spot") < pools.index("on-demand")
    assert not (home / ".vlv-ray" / "launches").exists() or not list((home / ".vlv-ray" / "launches").glob("*.json"))


def test_bad_input_is_one_line_and_exit_2_before_anything_starts(tmp_path):
    home = tmp_path / "home"
    bad = tmp_path / "bad.yaml"
    doc = yaml.safe_load((CLUSTER / "local-fake.yaml").read_text())
    doc["max_workers"] = "eight"
    bad.write_text(yaml.safe_dump(doc))
    line = one_line_error(launch("jobs/tiny.yaml", "--cluster", bad, "--dry-run", home=home))
    assert f"{bad}: max_workers: 'eight' is not of type 'integer'" in line

    line = one_line_error(launch("jobs/stage1-paper.yaml", *S3_JOB, "--cluster", CLUSTER / "aws-spot.yaml", "--yes",
                                 home=home))
    assert "aws-spot.yaml: provider aws: no AWS credentials" in line and "~/.aws/credentials" in line
    line = one_line_error(launch("jobs/stage1-paper.yaml", *S3_JOB, "--cluster", CLUSTER / "gcp-spot.yaml", "--yes",
                                 home=home, VLV_GCP_PROJECT="p"))
    assert "provider gcp: no GCP application-default credentials" in line
    line = one_line_error(launch("jobs/stage1-paper.yaml", *S3_JOB, "--cluster", CLUSTER / "gcp-spot.yaml",
                                 "--dry-run", home=home))
    assert "gcp-spot.yaml: VLV_GCP_PROJECT: not set" in line

    line = one_line_error(launch("jobs/tiny.yaml", "--cluster", CLUSTER / "aws-spot.yaml", "--dry-run", home=home,
                                 AWS_ACCESS_KEY_ID="AKIAFAKE", AWS_SECRET_ACCESS_KEY="fake"))
    assert "jobs/tiny.yaml: storage_path: got 'vlv-demo/runs', a path on this machine" in line and "aws" in line

    line = one_line_error(launch("jobs/tiny.yaml", "scaling.accelerator_type=H100", "--cluster",
                                 CLUSTER / "local-fake.yaml", "--dry-run", home=home))
    assert "no worker type offers" in line and "accelerator_type:H100" in line

    line = one_line_error(launch(REPO / "jobs" / "tiny.yaml", "--cluster", CLUSTER / "local-fake.yaml", "--dry-run",
                                 home=home, cwd=tmp_path))
    assert "tiny.yaml: must be inside the current directory" in line

    # An estimate over the budget stops the launch unless --yes (no terminal to ask on).
    line = one_line_error(launch("jobs/tiny.yaml", "--cluster", CLUSTER / "local-fake.yaml", "--budget", "0.000001",
                                 "--throughput", "0.01", home=home))
    assert "--budget: the estimate $" in line and "pass --yes" in line
    assert not list((home / ".vlv-ray" / "launches").glob("*.json"))  # nothing started, nothing recorded

    r = launch("--status", home=home)
    assert r.returncode == 0 and "no launches" in r.stdout
    line = one_line_error(launch("--down", "nope", home=home))
    assert "--down: nope: no such launch" in line
