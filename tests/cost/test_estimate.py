"""`vlv-ray cost estimate`: figures follow from the job, the throughput and the catalog."""
import json
import subprocess
import sys
from pathlib import Path

from helpers import REPO  # noqa: E402


def estimate(*args, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "vlv_ray.cli", "cost", "estimate", *args],
                          capture_output=True, text=True, cwd=cwd, timeout=120)


def test_paper_stage1_on_l40s_from_a_given_throughput():
    r = estimate(str(REPO / "jobs/stage1-paper.yaml"), "--throughput", "37", "--instance", "g6e.xlarge", "--json")
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


def test_measured_figures_per_gpu_come_from_the_results_file(tmp_path):
    results = tmp_path / "results.json"
    results.write_text(json.dumps({"train_step": [
        {"stage": 1, "gpu_model": "H100", "samples_per_s_per_gpu": 100.0},
        {"stage": 1, "gpu_model": "L4", "samples_per_s_per_gpu": 10.0},
        {"stage": 2, "gpu_model": "L4", "samples_per_s_per_gpu": 999.0}]}))
    r = estimate(str(REPO / "jobs/stage1-paper.yaml"), "--results", str(results), "--json")
    assert r.returncode == 0, r.stderr
    e = json.loads(r.stdout)
    rows = [e["instance"], *e["cheapest_alternatives"]]
    assert {x["gpu_model"] for x in rows} <= {"H100", "L4"}
    for x in rows:
        assert x["samples_per_s_per_gpu"] == {"H100": 100.0, "L4": 10.0}[x["gpu_model"]]
        assert x["throughput_from"].startswith("measured")
    text = estimate(str(REPO / "jobs/stage1-paper.yaml"), "--results", str(results)).stdout
    assert "GPU-h" in text and "spot" in text


def test_bad_input_is_one_line_and_exit_2(tmp_path):
    for args, msg in ((["--throughput", "37", "--instance", "p9.huge"], "--instance: 'p9.huge' is not in"),
                      (["--throughput", "-1"], "--throughput: got -1.0"),
                      (["--results", str(tmp_path / "none.json")], "--throughput: required")):
        r = estimate(str(REPO / "jobs/stage1-paper.yaml"), *args)
        assert r.returncode == 2 and r.stderr.startswith("vlv-ray: error: ") and msg in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
