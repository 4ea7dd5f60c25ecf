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
    assert abs(i["gpu_hours"] - 102_400_000 / 37 / 3600) < 1e-6  # compute only
    # The model's wall time adds each optimizer step's all-reduce (8 single-GPU nodes: over the network).
    assert i["comm_s_per_step"] > 0
    assert i["wall_hours"] == pytest.approx(i["gpu_hours"] / 8 + 200_000 * i["comm_s_per_step"] / 3600)
    assert i["on_demand_usd"] == pytest.approx(i["wall_hours"] * 8 * 1.861 + i["head_usd"] + i["storage_usd"])
    assert i["head_usd"] > 0 and i["spot_usd"] < i["on_demand_usd"]
    # --throughput describes the L40S: alternatives are other L40S shapes only.
    assert {r["gpu_model"] for r in e["cheapest_alternatives"]} == {"L40S"}


def test_measured_figures_per_gpu_come_from_bench_steps_rows(tmp_path):
    from vlv_ray.cost import model

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

    def one(instance):
        r = estimate(str(REPO / "jobs/stage1-paper.yaml"), "--results", str(results), "--instance", instance, "--json")
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)["instance"]
    l4, h200, h100 = one("g6.xlarge"), one("p5en.48xlarge"), one("p5.48xlarge")
    assert (l4["samples_per_s_per_gpu"], l4["estimated"]) == (10.0, False)  # measured at the job's batch: no recompute
    assert l4["throughput_from"].startswith("measured (step) on NVIDIA L4") and l4["settings"] == []
    assert (h200["samples_per_s_per_gpu"], h200["estimated"]) == (80.0, False)
    # No H100 row: estimated from the H200's figure by the peak/bandwidth model, and labelled so.
    assert h100["estimated"] and "from H200's measured 80" in h100["throughput_from"]
    assert h100["samples_per_s_per_gpu"] == pytest.approx(80.0 / model.scale(1, "H200", "H100"))
    assert 0.8 * 80 < h100["samples_per_s_per_gpu"] < 80  # same tensor peak, 0.70x the bandwidth
    for x in (l4, h200, h100):
        assert x["gpu_hours"] == pytest.approx(200_000 * 512 / x["samples_per_s_per_gpu"] / 3600)
    text = estimate(str(REPO / "jobs/stage1-paper.yaml"), "--results", str(results)).stdout
    assert "GPU-h" in text and "spot" in text and "estimated" in text


def test_a_results_file_of_another_shape_is_one_line(tmp_path):
    bad = tmp_path / "results.json"
    bad.write_text(json.dumps({"results": [{"bench": "step", "stage": 1, "preset": "paper", "config": "ours",
                                            "device": "NVIDIA H100", "resolution": 384, "samples_per_s_per_gpu": "fast"}]}))
    r = estimate(str(REPO / "jobs/stage1-paper.yaml"), "--results", str(bad))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert str(bad) in r.stderr and "bench_step.py" in r.stderr


def test_bad_input_is_one_line_and_exit_2(tmp_path):
    neither = tmp_path / "neither.csv"
    neither.write_text("a,b\n1,2\n")
    stage2 = (REPO / "jobs/stage2-paper.yaml").read_text()
    assert "batch_size: 8" in stage2
    huge = tmp_path / "huge.yaml"
    huge.write_text(stage2.replace("batch_size: 8", "batch_size: 64"))
    stage1 = str(REPO / "jobs/stage1-paper.yaml")
    for job, args, msg in ((stage1, ["--throughput", "37", "--instance", "p9.huge"], "--instance: 'p9.huge' is not in"),
                           (stage1, ["--throughput", "-1"], "--throughput: got -1.0"),
                           (stage1, ["--results", str(tmp_path / "none.json")], "--throughput: required"),
                           (stage1, ["--prices", str(neither)], f"{neither}: header: expected SkyPilot's"),
                           (str(huge), [], f"{huge}: data.batch_size: micro-batch 64 needs")):
        r = estimate(job, *args)
        assert r.returncode == 2 and r.stderr.startswith("vlv-ray: error: ") and msg in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
