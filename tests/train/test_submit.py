"""Submitting to a real local Ray head, from a user's shell: a clean environment with the
cluster's token in ~/.ray/auth_token and no RAY_AUTH_MODE exported, the user's own project
directory as the working dir, and sentinel secrets that must not reach Ray's job records."""
import json
import re
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import RAY_TOKEN, start_ray_head, user_env  # tests/ is on sys.path: its conftest.py is there
from helpers import REPO, free_port

from vlv_ray.train import integrity
SENTINELS = {"AWS_ACCESS_KEY_ID": "AKIASENTINEL7f3a9c", "AWS_SECRET_ACCESS_KEY": "secret-sentinel-7f3a9c",
             "WANDB_API_KEY": "wandb-sentinel-7f3a9c"}


def _project(tmp_path: Path) -> Path:
    """A user's directory: their job file and runtime env, none of the repo's code."""
    proj = tmp_path / "my-project"
    (proj / "jobs").mkdir(parents=True)
    for name in ("tiny.yaml", "runtime_env.yaml"):
        shutil.copy(REPO / "jobs" / name, proj / "jobs" / name)
    return proj


def _sh(cmd: str, *, cwd: Path, env: dict, timeout: float = 900) -> subprocess.CompletedProcess:
    """A command line as the user types it into bash."""
    return subprocess.run(["bash", "-c", cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _api(url: str) -> str:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {RAY_TOKEN}"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return r.read().decode()


def _where_ray_keeps(value: str, head, job_id: str, *, cwd: Path, env: dict) -> list[str]:
    """The places among `ray job list`, the jobs API and the head's files that hold `value`."""
    found = []
    listing = _sh(f"RAY_AUTH_MODE=token ray job list --address {head.dashboard}", cwd=cwd, env=env, timeout=120)
    assert listing.returncode == 0, listing.stderr[-2000:]
    assert job_id in listing.stdout  # the listing is the real one
    if value in listing.stdout + listing.stderr:
        found.append("ray job list")
    jobs = _api(f"{head.dashboard}/api/jobs/")
    assert job_id in jobs
    if value in jobs:
        found.append("/api/jobs/")
    if value in _api(f"{head.dashboard}/api/jobs/{job_id}"):
        found.append(f"/api/jobs/{job_id}")
    needle = value.encode()
    for f in head.temp_dir.rglob("*"):
        try:
            if f.is_file() and not f.is_symlink() and needle in f.read_bytes():
                found.append(str(f.relative_to(head.temp_dir)))
        except OSError:  # sockets, files rotated away while reading
            continue
    return found


TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")


@pytest.fixture(autouse=True)
def _head_left_idle(request, tmp_path):
    """A test that ran jobs on the module's head leaves it idle: every job ended, no job's driver
    process alive, every CPU free, within 120 s. Otherwise the test fails naming what holds the
    head, and its jobs and drivers are stopped, so the module's later tests do not wait out
    their placement timeout (a CI run lost two tests that way: a stopped job's orphaned driver
    kept its workers' CPUs, and the next job's data readers and its starved each other)."""
    yield
    if "fresh_ray_head" not in request.fixturenames:
        return
    head = request.getfixturevalue("fresh_ray_head")
    deadline = time.time() + 120
    while True:
        jobs = json.loads(_api(f"{head.dashboard}/api/jobs/"))
        running = [j["submission_id"] for j in jobs if j["status"] not in TERMINAL]
        drivers = _drivers_alive(jobs)
        used = _cpus_used(head)
        if not running and not drivers and used == 0:
            return
        if time.time() > deadline:
            break
        time.sleep(2)
    env = user_env(tmp_path / "idle-home")
    held = _sh(f"RAY_AUTH_MODE=token ray list actors --filter state=ALIVE --address {head.dashboard}; "
               f"RAY_AUTH_MODE=token ray list placement-groups --address {head.dashboard}", cwd=tmp_path, env=env,
               timeout=120)
    for job_id in running:
        _sh(f"RAY_AUTH_MODE=token ray job stop --address {head.dashboard} {job_id}", cwd=tmp_path, env=env,
            timeout=300)
    for proc in drivers.values():
        proc.kill()
    pytest.fail(f"the head is not idle 120 s after the test: jobs running {running}, drivers of ended jobs alive "
                f"{ {k: ' '.join(p.cmdline()) for k, p in drivers.items()} }, CPUs in use {used}\n"
                f"{held.stdout[-4000:]}{held.stderr[-1000:]}")


def _drivers_alive(jobs: list[dict]) -> dict:
    """{submission id: process} for each ended job whose driver process still runs (the head is
    this machine's)."""
    import psutil

    alive = {}
    for j in jobs:
        pid = (j.get("driver_info") or {}).get("pid")
        if j["status"] in TERMINAL and pid:
            try:
                proc = psutil.Process(int(pid))
                if proc.status() != psutil.STATUS_ZOMBIE:
                    alive[j["submission_id"]] = proc
            except psutil.NoSuchProcess:
                pass
    return alive


def _cpus_used(head) -> float | None:
    """CPUs the head's tasks and actors hold, as `ray status` says it (None before its first report)."""
    status = json.loads(_api(f"{head.dashboard}/api/cluster_status?format=1"))["data"]["clusterStatus"]
    m = re.search(r"Total Usage:\s+([\d.]+)/[\d.]+ CPU", status or "")
    return float(m.group(1)) if m else None


def test_submit_from_a_users_shell_runs_the_job_and_forwards_no_secret(fresh_ray_head, tiny_dataset, tmp_path):
    proj, runs = _project(tmp_path), tmp_path / "runs"
    env = user_env(tmp_path / "home", **SENTINELS)
    r = subprocess.run(
        ["vlv-ray", "submit", "jobs/tiny.yaml", f"data.uri={tiny_dataset}", f"storage_path={runs}",
         "name=submitted", "max_steps=3", "checkpoint.every_steps=3", "--address", fresh_ray_head.dashboard, "--wait"],
        cwd=proj, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    job_id = r.stdout.split("submitted submitted as ")[1].split()[0]
    assert f"{job_id}: SUCCEEDED" in r.stdout
    assert (runs / "submitted" / "step-00000003" / "trainer_state.json").is_file()
    assert "vlv-ray: not forwarding AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, WANDB_API_KEY" in r.stderr

    # The printed hint works when pasted into the same shell (minus --follow: the job is done).
    hint = next(line for line in r.stdout.splitlines() if line.startswith("follow logs: "))
    logs = _sh(hint.removeprefix("follow logs: ").replace(" --follow", ""), cwd=proj, env=env, timeout=120)
    assert logs.returncode == 0, logs.stderr[-2000:]
    assert "step 3/3 |" in logs.stdout  # the loop's log line reached the job's logs

    for value in SENTINELS.values():
        assert value not in r.stdout + r.stderr + logs.stdout
        assert _where_ray_keeps(value, fresh_ray_head, job_id, cwd=proj, env=env) == []


def test_forward_secrets_is_explicit_and_says_where_they_show(fresh_ray_head, tiny_dataset, tmp_path):
    """With --forward-secrets the value does land in Ray's records: the warning is true,
    and the search above would find a leak."""
    proj = _project(tmp_path)
    forwarded = "forwarded-sentinel-2d4e"
    env = user_env(tmp_path / "home", WANDB_API_KEY=forwarded)
    r = subprocess.run(
        ["vlv-ray", "submit", "jobs/tiny.yaml", f"data.uri={tiny_dataset}", f"storage_path={tmp_path / 'runs'}",
         "name=forwarded", "--address", fresh_ray_head.dashboard, "--forward-secrets"],
        cwd=proj, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    job_id = r.stdout.split("submitted forwarded as ")[1].split()[0]
    stop = _sh(f"RAY_AUTH_MODE=token ray job stop --address {fresh_ray_head.dashboard} {job_id}", cwd=proj, env=env,
               timeout=300)
    assert stop.returncode == 0, stop.stderr[-2000:]
    status = _sh(f"RAY_AUTH_MODE=token ray job status --address {fresh_ray_head.dashboard} {job_id}", cwd=proj,
                 env=env, timeout=120).stdout
    assert "was stopped" in status, status  # stopped, not run to its end
    warning = [line for line in r.stderr.splitlines() if line.startswith("vlv-ray: warning: forwarding WANDB_API_KEY")]
    assert len(warning) == 1 and "`ray job list`" in warning[0] and "runtime_env_agent.log" in warning[0]
    places = _where_ray_keeps(forwarded, fresh_ray_head, job_id, cwd=proj, env=env)
    assert "ray job list" in places and f"/api/jobs/{job_id}" in places, places


def test_rays_own_job_submit_as_the_readme_says(fresh_ray_head, tiny_dataset, tmp_path):
    proj, runs = _project(tmp_path), tmp_path / "runs"
    env = user_env(tmp_path / "home")
    cmd = (f"RAY_AUTH_MODE=token ray job submit --address {fresh_ray_head.dashboard} --working-dir . "
           f"--runtime-env jobs/runtime_env.yaml -- vlv-ray train jobs/tiny.yaml "
           f"data.uri={tiny_dataset} storage_path={runs} name=raysubmit max_steps=3 checkpoint.every_steps=3")
    r = _sh(cmd, cwd=proj, env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "succeeded" in r.stdout.lower() and "step 3/3 |" in r.stdout
    assert (runs / "raysubmit" / "step-00000003" / "trainer_state.json").is_file()


def test_submit_to_an_unreachable_address_is_one_line(tmp_path):
    proj = _project(tmp_path)
    port = free_port()
    address = f"http://127.0.0.1:{port}"
    r = subprocess.run(["vlv-ray", "submit", "jobs/tiny.yaml", "--address", address], cwd=proj,
                       env=user_env(tmp_path / "home"), capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines() == [
        f"vlv-ray: error: --address {address}: nothing answered at 127.0.0.1:{port} (Connection refused); "
        "expected the head's dashboard, e.g. http://HEAD:8265, with the cluster running"]


def test_an_exported_dead_address_is_one_line_within_seconds(tmp_path):
    """A GCS address in RAY_ADDRESS (no --address): Ray's client used to wait ≈ 35 s for it and
    end in an RpcError traceback."""
    proj = _project(tmp_path)
    port = free_port()
    start = time.monotonic()
    r = subprocess.run(["vlv-ray", "submit", "jobs/tiny.yaml"], cwd=proj, capture_output=True, text=True,
                       env=user_env(tmp_path / "home", RAY_ADDRESS=f"127.0.0.1:{port}"), timeout=300)
    took = time.monotonic() - start
    assert r.returncode == 2, r.stderr[-3000:]
    assert r.stderr.strip().splitlines() == [
        f"vlv-ray: error: RAY_ADDRESS 127.0.0.1:{port}: nothing answered at 127.0.0.1:{port} (Connection refused); "
        "expected the head's dashboard, e.g. http://HEAD:8265, with the cluster running"]
    assert took < 20, took  # the CLI's own start-up (imports) is most of it on a loaded machine


def test_the_address_flag_wins_over_exported_addresses(fresh_ray_head, tmp_path):
    """With a live cluster exported (as the README has users do), an explicit --address is the
    one used: here a dead one, so nothing may reach the exported cluster."""
    proj = _project(tmp_path)
    before = len(json.loads(_api(f"{fresh_ray_head.dashboard}/api/jobs/")))
    dead = f"http://127.0.0.1:{free_port()}"
    r = subprocess.run(["vlv-ray", "submit", "jobs/tiny.yaml", "--address", dead], cwd=proj, capture_output=True,
                       text=True, timeout=300, env=user_env(tmp_path / "home", RAY_ADDRESS=fresh_ray_head.address,
                                                            RAY_API_SERVER_ADDRESS=fresh_ray_head.dashboard))
    assert r.returncode == 2, r.stdout[-2000:] + r.stderr[-2000:]
    assert r.stderr.strip().splitlines()[-1].startswith(f"vlv-ray: error: --address {dead}: nothing answered"), r.stderr
    assert len(json.loads(_api(f"{fresh_ray_head.dashboard}/api/jobs/"))) == before


def test_ray_job_stop_checkpoints_every_rank_and_the_log_follows_live(fresh_ray_head, tiny_dataset, tmp_path):
    """`ray job stop` sends the driver SIGTERM: every rank checkpoints its current step and the
    log says where it stopped and how to resume. The step lines show in `ray job logs` while
    the job runs (its driver's stdout is a file)."""
    proj, runs = _project(tmp_path), tmp_path / "runs"
    env = user_env(tmp_path / "home")
    r = subprocess.run(["vlv-ray", "submit", "jobs/tiny.yaml", f"data.uri={tiny_dataset}", f"storage_path={runs}",
                        "name=stopped", "max_steps=200", "checkpoint.every_steps=100", "--address",
                        fresh_ray_head.dashboard], cwd=proj, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    job_id = r.stdout.split("submitted stopped as ")[1].split()[0]
    ray_job = f"RAY_AUTH_MODE=token ray job {{}} --address {fresh_ray_head.dashboard} {job_id}"
    deadline = time.time() + 400
    while True:
        logs = _sh(ray_job.format("logs"), cwd=proj, env=env, timeout=120).stdout
        if re.search(r"step \d+/200 \|", logs):
            break
        status = _sh(ray_job.format("status"), cwd=proj, env=env, timeout=120).stdout
        assert "RUNNING" in status or "PENDING" in status, status + logs[-3000:]
        assert time.time() < deadline, f"no step line in `ray job logs` while the job ran:\n{logs[-3000:]}"
        time.sleep(2)
    stop = _sh(ray_job.format("stop"), cwd=proj, env=env, timeout=600)
    assert stop.returncode == 0, stop.stderr[-2000:]
    logs = _sh(ray_job.format("logs"), cwd=proj, env=env, timeout=120).stdout
    m = re.search(r"vlv-ray: stopped by SIGTERM at step (\d+), checkpoint (\S+); resume with the same command: "
                  r"vlv-ray train jobs/tiny\.yaml", logs)
    assert m, logs[-3000:]
    assert m.group(2) == str(runs / "stopped" / f"step-{int(m.group(1)):08d}")
    assert integrity.problem(m.group(2)) is None  # every rank's files, marked complete
    assert "was stopped" in _sh(ray_job.format("status"), cwd=proj, env=env, timeout=120).stdout


def test_a_driver_whose_job_shell_is_gone_stops_itself_and_checkpoints(fresh_ray_head, tiny_dataset, tmp_path):
    """`ray job submit -- vlv-ray train …` runs the driver under Ray's `sh -c`. A CI run once had
    that shell killed alone (a `ray job stop` racing the job's start): the job read STOPPED while
    its orphaned driver trained on and held its workers' CPUs, and the module's next jobs starved.
    Here the shell is killed while the run trains: the driver stops as for SIGTERM, every rank
    checkpoints, and nothing of it is left on the head."""
    import psutil

    proj, runs = _project(tmp_path), tmp_path / "runs"
    env = user_env(tmp_path / "home")
    r = _sh(f"RAY_AUTH_MODE=token ray job submit --no-wait --address {fresh_ray_head.dashboard} --working-dir . "
            f"--runtime-env jobs/runtime_env.yaml -- vlv-ray train jobs/tiny.yaml data.uri={tiny_dataset} "
            f"storage_path={runs} name=orphan max_steps=200 checkpoint.every_steps=100", cwd=proj, env=env, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    job_id = re.search(r"raysubmit_\w+", r.stdout).group(0)
    logs = lambda: _sh(f"RAY_AUTH_MODE=token ray job logs --address {fresh_ray_head.dashboard} {job_id}", cwd=proj,
                       env=env, timeout=120).stdout
    deadline = time.time() + 400
    while not re.search(r"step \d+/200 \|", out := logs()):
        assert time.time() < deadline, f"no step line while the job ran:\n{out[-3000:]}"
        time.sleep(2)
    driver = next(p for p in psutil.process_iter(["cmdline"])
                  if "name=orphan" in (p.info["cmdline"] or []) and "train" in p.info["cmdline"])
    shell = driver.parent()
    assert shell.name() in ("sh", "dash", "bash"), shell.cmdline()
    shell.kill()
    driver.wait(timeout=180)  # psutil.TimeoutExpired: the driver trained on
    out = logs()
    assert f"[vlv-ray] the process that started this driver (pid {shell.pid}, the job's entrypoint) is gone" in out
    m = re.search(r"vlv-ray: stopped by SIGTERM at step (\d+), checkpoint (\S+);", out)
    assert m, out[-3000:]
    assert integrity.problem(m.group(2)) is None  # every rank's files, marked complete


def test_submit_refuses_a_job_file_outside_the_uploaded_directory(tmp_path):
    proj = _project(tmp_path)
    r = subprocess.run(["vlv-ray", "submit", str(REPO / "jobs" / "tiny.yaml"), "--address", "http://127.0.0.1:1"],
                       cwd=proj, env=user_env(tmp_path / "home"), capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "must be inside the current directory" in r.stderr and str(proj) in r.stderr


def test_a_head_whose_job_agent_never_comes_up_is_one_line_naming_its_log(tmp_path):
    """The second head on one machine, as it was in CI: its agent's port already taken."""
    import socket

    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        with start_ray_head(f"--dashboard-agent-listen-port={held.getsockname()[1]}") as head:
            proj = _project(tmp_path)
            r = subprocess.run(["vlv-ray", "submit", "jobs/tiny.yaml", "--address", head.dashboard,
                                "--agent-wait", "5"], cwd=proj, env=user_env(tmp_path / "home"),
                               capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stderr[-3000:]
    assert "agent is not up yet: retrying for up to 5s" in r.stdout
    ours = [line for line in r.stderr.splitlines() if line.startswith("vlv-ray")]  # the rest is Ray's upload log
    assert len(ours) == 1 and ours[0] == r.stderr.strip().splitlines()[-1], r.stderr
    assert "did not come up in 5 s" in ours[0] and "dashboard_agent.log" in ours[0], r.stderr


def test_submit_refuses_secrets_written_in_runtime_env(tmp_path):
    import pytest

    from vlv_ray.config import ConfigError
    from vlv_ray.train.submit import runtime_env

    bad = tmp_path / "runtime_env.yaml"
    bad.write_text("env_vars:\n  WANDB_API_KEY: abc\n")
    with pytest.raises(ConfigError, match="WANDB_API_KEY must not be written in a file"):
        runtime_env(bad)


def test_runtime_env_uploads_the_current_directory_with_its_excludes(tmp_path, monkeypatch):
    from vlv_ray.train.submit import runtime_env

    proj = _project(tmp_path)
    monkeypatch.chdir(proj)
    for k, v in SENTINELS.items():
        monkeypatch.setenv(k, v)
    env = runtime_env()
    assert env["working_dir"] == str(proj) and ".venv/" in env["excludes"]
    # `ray job stop` gives the driver time to checkpoint every rank (Ray's default: 3 s).
    assert int(env["env_vars"]["RAY_JOB_STOP_WAIT_TIME_S"]) >= 300
    assert not set(SENTINELS) & set(env["env_vars"])
    forwarded = runtime_env(forward_secrets=True)["env_vars"]
    assert {k: forwarded[k] for k in SENTINELS} == SENTINELS


def test_the_notice_names_every_secret_held_back(monkeypatch, capsys):
    from vlv_ray.train.submit import _say_about_secrets

    monkeypatch.setenv("HF_TOKEN", "hf_sentinel")
    monkeypatch.setenv("WANDB_API_KEY", "w")
    _say_about_secrets(False)
    notice = capsys.readouterr().err
    assert "WANDB_API_KEY, HF_TOKEN: the cluster's nodes supply credentials" in notice and "hf_sentinel" not in notice
