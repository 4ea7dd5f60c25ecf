"""The budget guard: from what a run has spent and its measured $/step, ok, warn or stop.

Projected total = spent + remaining steps × $/step (`model.projected_usd`, the cost model's
own projection). The $/step is the run's measured one; before a step has been measured it
is the model's quote for the job's instance (`model.quote_job`, the figure `cost estimate`
and `cost plan` show for it), and then the guard only warns (`basis` names the quote).
- warn (the caller logs it once) when the projected total reaches 80% of the budget;
- stop when one more step would take the spend past the budget: the run checkpoints and
  ends before the budget is blown, not after.
Stopping on the projection alone would end a run at its first step whenever the early
$/step (noisy, and carrying start-up time) says it will not finish in budget; the user
gets the warning instead and decides.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from vlv_ray.cost.model import projected_usd

WARN_AT = 0.8

@dataclass(frozen=True)
class Verdict:
    action: Literal["ok", "warn", "stop"]
    spent: float
    projected: float
    budget: float
    message: str = ""

@dataclass(frozen=True)
class BudgetGuard:
    budget_usd: float

    def check(self, spent: float, step: int, max_steps: int, usd_per_step: float, basis: str = "") -> Verdict:
        """`basis` empty: `usd_per_step` is measured. Else it is a quote (named by `basis`): warn, never stop."""
        projected = projected_usd(spent, step, max_steps, usd_per_step)
        b = self.budget_usd
        if basis and projected >= WARN_AT * b:
            return Verdict("warn", spent, projected, b,
                           f"budget: the cost model projects ${projected:.2f} for {max_steps} steps, {projected / b:.0%} "
                           f"of cost.budget_usd=${b:.2f} (spent ${spent:.2f} at step {step}; {basis}, "
                           f"${usd_per_step:.4f}/step)")
        if basis:
            return Verdict("ok", spent, projected, b)
        if step < max_steps and spent + usd_per_step >= b:
            bigger = round(max(projected, spent) * 1.1, 2)
            return Verdict("stop", spent, projected, b,
                           f"budget: spent ${spent:.2f} of cost.budget_usd=${b:.2f} at step {step}/{max_steps} "
                           f"(${usd_per_step:.4f}/step, projected ${projected:.2f} for the run); checkpointed and "
                           f"stopped. Resume with a larger budget: vlv-ray train JOB.yaml cost.budget_usd={bigger:g}")
        if projected >= WARN_AT * b:
            return Verdict("warn", spent, projected, b,
                           f"budget: projected ${projected:.2f} for {max_steps} steps is {projected / b:.0%} of "
                           f"cost.budget_usd=${b:.2f} (spent ${spent:.2f} at step {step}, ${usd_per_step:.4f}/step)")
        return Verdict("ok", spent, projected, b)
