"""The real autoscaler on this machine: cluster/local-fake.yaml with Ray's fake multi-node provider.

A tiny training job that needs a (fake) L40S node runs through `vlv-ray train`; the
autoscaler launches the node, the job trains, one node is killed mid-run (a preemption),
Ray Train resumes on a replacement the autoscaler launches, and idle nodes are removed.
The ledger must count both GPU nodes, each within 10% of its lifetime in Ray's node table
(clipped to the time the run's driver was metering).
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
import yaml

from conftest import _wait_port, free_port, stop_process_tree

from helpers import REPO, descendants, fake_raylets, own_port_flags, preempt  # noqa: E402
GPU_TYPES = ("gpu_l40s_x1_spot", "gpu_l40s_x2_spot")


@pytest.fixture
def fake_cluster():
    """`RAY_FAKE_CLUSTER=1 ray start --head --autoscaling-config=cluster/local-fake.yaml`, stopped by PID."""
    import ray._private.services as services

    tmp = Path(tempfile.mkdtemp(prefix="vlvfake-", dir="/tmp"))
    ip, port, dash = services.get_node_ip_address(), free_port(), free_port()
    cfg = yaml.safe_load((REPO / "cluster" / "local-fake.yaml").read_text())
    cfg["provider"]["gcs_address"] = f"{ip}:{port}"  # the fake nodes join this head, not :6379
    (tmp / "fake.yaml").write_text(yaml.safe_dump(cfg))
    head_labels = ",".join(f"{k}={v}" for k, v in cfg["available_node_types"]["ray.head.default"]["labels"].items())
    env = {**os.environ, "RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1",
           "AUTOSCALER_HEARTBEAT_TIMEOUT_S": "5", "RAY_ADDRESS": f"{ip}:{port}",  # Ray Train's helper actors
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    log = tmp / "head.log"
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "ray"), "start", "--head", "--block", f"--port={port}",
         f"--node-ip-address={ip}", "--num-cpus=2", f"--labels={head_labels}", f"--temp-dir={tmp}",
         f"--autoscaling-config={tmp / 'fake.yaml'}", "--include-dashboard=true", "--dashboard-host=127.0.0.1",
         f"--dashboard-port={dash}", "--disable-usage-stats", *own_port_flags()],
        stdout=log.open("w"), stderr=subprocess.STDOUT, env=env, start_new_session=True, cwd=tmp)
    try:
        _wait_port(port, proc, log)
        _wait_port(dash, proc, log)
        yield {"address": f"{ip}:{port}", "dashboard": f"http://127.0.0.1:{dash}", "proc": proc, "tmp": tmp}
    finally:
        fake_nodes = descendants(proc.pid)  # our head's tree only, fake nodes included
        stop_process_tree(proc)
        for pid in fake_nodes:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
def state_api_auth():
    """This test reads Ray's state API in-process: token auth on for the test only, then Ray's
    cached mode read again, so later tests still meet Ray as a user's shell does."""
    from ray._raylet import Config

    from vlv_ray.train.auth import MODE_ENV, use_token_if_available

    had = os.environ.get(MODE_ENV)
    use_token_if_available()
    yield
    if had is None:
        os.environ.pop(MODE_ENV, None)
    else:
        os.environ[MODE_ENV] = had
    Config.initialize("")


def nodes(dashboard: str) -> list:
    from ray.util.state import list_nodes

    return list_nodes(address=dashboard, detail=True, raise_on_missing_output=False)


@pytest.mark.integration
@pytest.mark.timeout(1800)  # two node starts and two worker-group starts: minutes on a shared 2-core machine
def test_autoscaler_launches_replaces_and_removes_nodes_and_the_ledger_counts_them(fake_cluster, state_api_auth, tiny_dataset,
                                                                                   tmp_path):
    runs = tmp_path / "runs"
    env = {**os.environ, "RAY_ADDRESS": fake_cluster["address"], "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "180",
           "PYTHONPATH": str(REPO)}
    train = subprocess.Popen(
        [sys.executable, "-m", "vlv_ray.cli", "train", str(REPO / "jobs/tiny.yaml"), "name=fake",
         f"storage_path={runs}", f"data.uri={tiny_dataset}", "max_steps=12", "scaling.num_workers=1",
         "scaling.accelerator_type=L40S", "checkpoint.every_steps=2", "checkpoint.max_failures=3",
         "cost.poll_s=0.5"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=tmp_path)
    lines, at_step3, t0 = [], threading.Event(), time.time()

    def read():
        for line in train.stdout:
            lines.append(f"{time.time() - t0:6.1f}s {line}")
            if "step 3/12" in line:
                at_step3.set()
    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert at_step3.wait(600), "".join(lines[-40:])
        (first,) = [n for n in nodes(fake_cluster["dashboard"])
                    if n.state == "ALIVE" and n.labels.get("vlv-ray/node-type") in GPU_TYPES]
        # The preemption: the node's raylet and every process on it (the training worker too) die at once.
        (raylet,) = fake_raylets(fake_cluster["proc"].pid, first.node_id)
        preempt(raylet)
        assert train.wait(900) == 0, "".join(lines[-60:])
    finally:
        if train.poll() is None:
            train.kill()
    reader.join(10)
    out = "".join(lines)
    (tmp_path / "train.log").write_text(out)
    print("".join(x for x in lines if "[vlv-ray]" in x or "step " in x or "rror" in x))
    assert "done: step 12" in out and "resuming at step" in out, out[-3000:]

    # Idle nodes go: wait for the replacement to be removed by the autoscaler.
    deadline = time.time() + 120
    while time.time() < deadline:
        gpu = [n for n in nodes(fake_cluster["dashboard"]) if n.labels.get("vlv-ray/node-type") in GPU_TYPES]
        if len(gpu) >= 2 and all(n.state == "DEAD" for n in gpu):
            break
        time.sleep(2)
    monitor = next(fake_cluster["tmp"].glob("session_*/logs/monitor.log")).read_text()
    if not (len(gpu) == 2 and all(n.state == "DEAD" for n in gpu)):
        from ray.util.state import list_actors, list_placement_groups

        pgs = list_placement_groups(address=fake_cluster["dashboard"], detail=True, raise_on_missing_output=False)
        actors = list_actors(address=fake_cluster["dashboard"], filters=[("state", "=", "ALIVE")],
                             raise_on_missing_output=False)
        raise AssertionError(f"nodes {[(n.node_id[-5:], n.state) for n in gpu]}; placement groups "
                             f"{[(p.placement_group_id[-6:], p.state, p.bundles) for p in pgs]}; alive actors "
                             f"{[(a.class_name, a.node_id[-5:] if a.node_id else None) for a in actors]}; "
                             f"monitor: {monitor[-2500:]}")
    second = next(n for n in gpu if n.node_id != first.node_id)
    assert f"Terminating the node with id {second.node_id}" in monitor and "(idle)" in monitor

    led = json.loads((runs / "fake" / "cost" / "ledger.json").read_text())
    (session,) = led["sessions"]
    print(f"\nmetering session: {session['stop'] - session['start']:.1f}s")
    for n in [*gpu, *[n for n in nodes(fake_cluster["dashboard"]) if n.is_head_node]]:
        entry = led["entries"][f"{n.node_id}/1"]
        end = n.end_time_ms / 1000 if n.state == "DEAD" else time.time()
        lifetime = end - n.start_time_ms / 1000
        metered = min(end, session["stop"]) - max(n.start_time_ms / 1000, session["start"])
        print(f"node {n.node_id[-5:]} {entry['node_type']:<18} {entry['instance_type']:<12} {entry['market']:<9} "
              f"lifetime {lifetime:6.1f}s, within the run {metered:6.1f}s, ledger {entry['seconds']:6.1f}s")
        assert abs(entry["seconds"] - metered) <= 0.10 * metered, (entry, metered)
        if n.node_id in (first.node_id, second.node_id):
            assert entry["market"] == "spot" and entry["instance_type"] in ("g6e.xlarge", "g6e.2xlarge")
            assert entry["usd_per_hour"] > 0
    preempted = next(n for n in gpu if n.node_id == first.node_id)  # whole life inside the run
    assert led["entries"][f"{first.node_id}/1"]["seconds"] == pytest.approx(
        (preempted.end_time_ms - preempted.start_time_ms) / 1000, rel=0.10)
    report = subprocess.run([sys.executable, "-m", "vlv_ray.cli", "cost", "report", str(runs / "fake")],
                            capture_output=True, text=True, env=env, timeout=120)
    assert report.returncode == 0 and "on-demand" in report.stdout and "spot" in report.stdout
    print(report.stdout)
