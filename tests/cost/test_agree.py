"""One cost model: `cost plan`, `cost estimate`, the budget guard and the live ledger give the
same figures for the same instance (vlv_ray/cost/model.py)."""
import json
import subprocess
import sys

import pytest

from vlv_ray.config import load_job
from vlv_ray.cost import catalog, model
from vlv_ray.cost.budget import BudgetGuard
from vlv_ray.cost.live import model_verdict
from vlv_ray.cost.meter import describe

from helpers import REPO  # noqa: E402

JOB = str(REPO / "jobs/stage1-paper.yaml")


def cli(*args):
    r = subprocess.run([sys.executable, "-m", "vlv_ray.cli", "cost", *args, "--json"], capture_output=True,
                       text=True, cwd=REPO, timeout=120)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@pytest.fixture(scope="module")
def row():
    """`cost plan`'s cheapest market for the job as written (spot at the zones' median)."""
    return cli("plan", JOB, "--clouds", "aws")["rows"][0]


@pytest.mark.parametrize("spot_price", ["median", "min"])
def test_plan_estimate_guard_and_ledger_agree_on_one_instance(row, spot_price):
    where = [f"cost.instance_type={row['instance_type']}", f"cost.region={row['region']}",
             f"cost.market={row['market']}", f"cost.spot_price={spot_price}"]
    est = cli("estimate", JOB, *where)["instance"]
    assert (est["instance_type"], est["region"]) == (row["instance_type"], row["region"])
    cfg = load_job(JOB, where)
    q = model.quote_job(cfg)
    assert isinstance(q, model.Quote), q
    total = est["spot_usd"] if row["market"] == "spot" else est["on_demand_usd"]
    if spot_price == "median":  # the plan priced this job as written: the same dollars
        assert total == pytest.approx(row["total_usd"], rel=1e-9)
        assert q.usd_per_node_hour == pytest.approx(row["jobs"][0]["usd_per_node_hour"], rel=1e-12)
    assert q.total_usd == pytest.approx(total, rel=1e-9)
    assert q.usd_per_step * cfg.max_steps == pytest.approx(q.total_usd, rel=1e-12)

    # The budget guard, before any step is measured, projects the model's total for the run …
    guard = BudgetGuard(q.total_usd / 0.9)
    v = model_verdict(cfg, guard, spent=0.0, step=0)
    assert v.projected == pytest.approx(total, rel=1e-9) and v.action == "warn"
    assert row["instance_type"] in v.message and f"${total:.2f}" in v.message
    # … never stops on a quote, and on a measured $/step equal to the model's, projects the same.
    assert model_verdict(cfg, BudgetGuard(1.0), spent=0.0, step=0).action == "warn"
    assert model_verdict(cfg, BudgetGuard(q.total_usd * 2), spent=0.0, step=0).action == "ok"
    half = cfg.max_steps // 2
    v = guard.check(q.usd_per_step * half, half, cfg.max_steps, q.usd_per_step)
    assert v.projected == pytest.approx(q.total_usd, rel=1e-9)

    # The live ledger meters a node of this row at the price the quote used.
    node = {"NodeID": "n1", "Alive": True, "Resources": {"GPU": 8.0},
            "Labels": {"vlv-ray/instance-type": row["instance_type"], "vlv-ray/market": row["market"],
                       "vlv-ray/region": row["region"]}}
    entry = describe(node, 1, catalog.load(), cfg.cost)
    assert entry.priced and entry.usd_per_hour == pytest.approx(q.usd_per_node_hour, rel=1e-12)
    # … and the run's object storage at the $/h the quote adds over its wall time.
    assert model.storage_hourly(cfg.cost) == pytest.approx(q.storage_usd / q.wall_hours, rel=1e-12)
    if row["market"] == "spot" and spot_price == "min":
        p = catalog.load().lookup(row["instance_type"], row["region"])
        assert entry.usd_per_hour == p.spot_min


def test_no_quote_without_a_named_instance():
    cfg = load_job(JOB, [])
    assert "cost.instance_type: not set" in model.quote_job(cfg)
    assert model_verdict(cfg, BudgetGuard(1.0), spent=0.0, step=0) is None
    missing = load_job(JOB, ["cost.instance_type=p9.huge"])
    assert "'p9.huge' is not in the price catalog" in model.quote_job(missing)
