"""The live ledger and the budget stop, through real training runs on the shared Ray head.

The head's node has no instance-type label, so it is priced at `cost.local_node_usd_per_hour`:
here $3600/h ($1 a second), so that the dollars are large enough to check against time.
"""
import json
import subprocess
import sys
import time
from pathlib import Path

from vlv_ray.config import load_job
from vlv_ray.train import launch

from helpers import REPO  # noqa: E402
PRICE = ["cost.local_node_usd_per_hour=3600", "cost.poll_s=0.5"]


def job(dataset, runs, *overrides):
    return load_job(REPO / "jobs/tiny.yaml", [f"data.uri={dataset}", f"storage_path={runs}", "name=costed",
                                              *PRICE, *overrides])


def report(run_dir: Path) -> dict:
    r = subprocess.run([sys.executable, "-m", "vlv_ray.cli", "cost", "report", str(run_dir), "--json"],
                       capture_output=True, text=True, cwd=REPO, timeout=120)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_ledger_meters_the_node_and_a_budget_stop_checkpoints_mid_run(ray_cluster, tiny_dataset, tmp_path, capfd):
    runs = tmp_path / "runs"
    t0 = time.time()
    first = launch.run(job(tiny_dataset, runs, "max_steps=4", "checkpoint.every_steps=4"))
    wall = time.time() - t0
    assert first.error is None and first.metrics["step"] == 4
    led = report(runs / "costed")
    (entry,) = led["entries"].values()
    assert entry["instance_type"] == "local" and entry["usd_per_hour"] == 3600 and entry["stage"] == 1
    # The tracker runs around trainer.fit(): its node-seconds are most of launch.run's wall time.
    assert 0.6 * wall < entry["seconds"] <= wall + 1.0, (entry["seconds"], wall)
    spent1 = led["total_usd"]
    assert abs(spent1 - entry["seconds"]) < 1e-6  # $1 a second
    state = json.loads((runs / "costed" / "step-00000004" / "trainer_state.json").read_text())
    assert 0 < state["cost_usd"] <= spent1  # the checkpoint carries the ledger's figure, not a flat price

    # Resume with a budget the run has all but spent: it trains one step, checkpoints and stops cleanly.
    capfd.readouterr()
    second = launch.run(job(tiny_dataset, runs, "max_steps=200", f"cost.budget_usd={spent1 + 0.5}"))
    out = capfd.readouterr().out
    assert second.error is None and second.metrics["step"] == 5, second.metrics
    assert (runs / "costed" / "step-00000005" / "_COMPLETE").is_file()
    assert f"of cost.budget_usd=${spent1 + 0.5:.2f} at step 5/200" in out
    assert "Resume with a larger budget: vlv-ray train JOB.yaml cost.budget_usd=" in out
    led2 = report(runs / "costed")
    assert led2["total_usd"] > spent1 + 0.5  # continued from the first run's total, not restarted
    assert len(led2["entries"]) == 1  # same node, same stage: one entry that kept counting


def test_cost_report_without_a_ledger_is_a_one_line_error(tmp_path):
    r = subprocess.run([sys.executable, "-m", "vlv_ray.cli", "cost", "report", str(tmp_path / "nope")],
                       capture_output=True, text=True, cwd=REPO, timeout=120)
    assert r.returncode == 2 and r.stderr.startswith("vlv-ray: error: ") and "no cost ledger" in r.stderr
