"""The budget guard's decisions from spent, step, max_steps and measured $/step."""
from vlv_ray.cost.budget import BudgetGuard


def test_ok_then_warn_at_80_percent_projected_then_stop_before_the_budget_is_blown():
    g = BudgetGuard(100.0)
    assert g.check(spent=10, step=10, max_steps=70, usd_per_step=1.0).action == "ok"  # projected 70
    v = g.check(spent=20, step=20, max_steps=100, usd_per_step=1.0)  # projected 100 ≥ 80
    assert v.action == "warn" and v.projected == 100 and "100%" in v.message
    assert g.check(spent=98.5, step=98, max_steps=100, usd_per_step=1.0).action == "warn"
    stop = g.check(spent=99.2, step=99, max_steps=100, usd_per_step=1.0)  # the next step would cross
    assert stop.action == "stop"
    assert "spent $99.20 of cost.budget_usd=$100.00 at step 99/100" in stop.message
    assert "cost.budget_usd=110.22" in stop.message  # resume hint: projected total + 10%


def test_a_finished_run_never_stops_and_zero_cost_never_warns():
    g = BudgetGuard(5.0)
    assert g.check(spent=4.99, step=100, max_steps=100, usd_per_step=1.0).action != "stop"
    assert g.check(spent=0.0, step=1, max_steps=10**6, usd_per_step=0.0).action == "ok"
