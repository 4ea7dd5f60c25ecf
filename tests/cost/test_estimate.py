"""`vlv-ray cost estimate`: figures follow from the job, the throughput and the catalog."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import REPO  # noqa: E402


def estimate(*args, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "vlv_ray.cli", "cost", "estimate", *args],
                          capture_output=True, text=True, cwd=cwd, timeout=120)


def test_paper_stage1_on_l40s_from_a_given_throughput(tmp_path):
    # No measured figures (the repo's results.json has H100-class rows that would join the alternatives).
    r = estimate(str(REPO / "jobs/stage1-paper.yaml"), "--throughput", "37", "--instance", "g6e.xlarge",
                 "--results", str(tmp_path / "none.json"), "--json")
    assert r.returncode == 0, r.stderr
    e = json.loads(r.stdout)
    assert e["samples"] == 200_000 * 512 and e["gpus"] == 8
    i = e["instance"]
    assert i["instance_type"] == "g6e.xlarge" and i["nodes"] == 8
    assert abs(i["gpu_hours"] - 102_400_000 / 37 / 3600) < 1e-6 and abs(i["wall_hours"] - i["gpu_hours"] / 8) < 1e-9
    assert abs(i["on_demand_usd"] - i["wall_hours"] * 8 * 1.861) < 1e-6
    assert i["spot_usd"] < i["on_demand_usd"]
    # --throughput describes the L40S: alternatives are other L40S shapes only.
    assert {r["gpu_model"] for r in e["cheapest_alternatives"]} == {"L40S"}


def test_measured_figures_per_gpu_come_from_bench_steps_rows(tmp_path):
    def step(device, sps, **kw):  # at the job's batch size (jobs/stage1-paper.yaml: 64)
        return {"bench": "step", "stage": 1, "preset": "paper", "config": "ours", "device": device,
                "batch_size": 64, "resolution": 384, "samples_per_s_per_gpu": sps, "date": "2026-11-26", **kw}
    results = tmp_path / "results.json"
    results.write_text(json.dumps({"results": [
        step("NVIDIA H200", 50.0, batch_size=16, date="2026-12-01"),  # newer, but not the job's batch size
        step("NVIDIA H200", 80.0),
        step("NVIDIA L4", 10.0),
        step("NVIDIA L4", 999.0, config="reference"), step("NVIDIA L4", 999.0, stage=2),
        step("NVIDIA L4", 999.0, preset="tiny"), step("NVIDIA L4", 999.0, resolution=256),
        step("cpu (2 threads)", 999.0)]}))
    r = estimate(str(REPO / "jobs/stage1-paper.yaml"), "--results", str(results), "--json")
    assert r.returncode == 0, r.stderr
    e = json.loads(r.stdout)
    rows = [e["instance"], *e["cheapest_alternatives"]]
    assert {x["gpu_model"] for x in rows} == {"H100", "L4"}  # no H200 in the catalog: the H100 borrows its figure
    for x in rows:
        assert x["samples_per_s_per_gpu"] == {"H100": 80.0, "L4": 10.0}[x["gpu_model"]]
        assert x["throughput_from"].startswith("measured on NVIDIA")
        assert ("H100: same SMs" in x["throughput_from"]) == (x["gpu_model"] == "H100")
        assert x["gpu_hours"] == pytest.approx(200_000 * 512 / x["samples_per_s_per_gpu"] / 3600)
    text = estimate(str(REPO / "jobs/stage1-paper.yaml"), "--results", str(results)).stdout
    assert "GPU-h" in text and "spot" in text


def test_a_results_file_of_another_shape_is_one_line(tmp_path):
    bad = tmp_path / "results.json"
    bad.write_text(json.dumps({"results": [{"bench": "step", "stage": 1, "preset": "paper", "config": "ours",
                                            "device": "NVIDIA H100", "resolution": 384, "samples_per_s_per_gpu": "fast"}]}))
    r = estimate(str(REPO / "jobs/stage1-paper.yaml"), "--results", str(bad))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert str(bad) in r.stderr and "bench_step.py" in r.stderr


def test_bad_input_is_one_line_and_exit_2(tmp_path):
    for args, msg in ((["--throughput", "37", "--instance", "p9.huge"], "--instance: 'p9.huge' is not in"),
                      (["--throughput", "-1"], "--throughput: got -1.0"),
                      (["--results", str(tmp_path / "none.json")], "--throughput: required")):
        r = estimate(str(REPO / "jobs/stage1-paper.yaml"), *args)
        assert r.returncode == 2 and r.stderr.startswith("vlv-ray: error: ") and msg in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
