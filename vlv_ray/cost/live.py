"""What the training loop sees of cost: dollars spent so far, and the budget stop.

Rank 0 asks the driver's `CostTracker` actor; the budget decision is rank 0's and is
shared with every rank by one all-reduce, so all ranks checkpoint and stop at the same
step. Without a tracker (a loop started outside `launch.run`) the dollars stay at the
total the checkpoint carried.

Before the first step is measured, rank 0 runs the guard once on the cost model's quote for
the job's instance (`model_verdict`): a job the model already prices past 80% of its budget
is warned about at its start, with the same figure `cost estimate` shows.
"""
from __future__ import annotations

import time

import torch

from vlv_ray.config import JobConfig
from vlv_ray.cost import model
from vlv_ray.cost.budget import BudgetGuard, Verdict
from vlv_ray.cost.catalog import CatalogError
from vlv_ray.cost.tracker import actor_name


def model_verdict(cfg: JobConfig, guard: BudgetGuard, spent: float, step: int) -> Verdict | None:
    """The guard on the model's $/step for the job's instance; None where the model has no quote."""
    try:
        q = model.quote_job(cfg)
    except CatalogError:  # advisory: an unreadable results/prices file is `cost estimate`'s to report
        return None
    if isinstance(q, str):
        return None
    basis = f"quote for {q.nodes} × {q.instance_type} {q.market} in {q.region}"
    return guard.check(spent, step, cfg.max_steps, q.usd_per_step, basis=basis)


class LiveCost:
    def __init__(self, cfg: JobConfig, rank: int, world: int, step: int, resumed_usd: float = 0.0):
        self.rank, self.world, self.max_steps = rank, world, cfg.max_steps
        self.guard = BudgetGuard(cfg.cost.budget_usd) if cfg.cost.budget_usd else None
        self.actor, self.last = None, resumed_usd
        # The tracker's total changes only when it polls the nodes (every cost.poll_s), so
        # rank 0 asks it at most twice per poll, not on every step of the hot loop.
        self.ask_every_s, self.asked_at = cfg.cost.poll_s / 2, float("-inf")
        if rank == 0:
            import ray

            try:
                self.actor = ray.get_actor(actor_name(cfg.name))
            except ValueError:
                print(f"[vlv-ray] cost: no tracker for {cfg.name} (started outside `vlv-ray train`?): "
                      "dollars stay at the checkpoint's total", flush=True)
        self.start_step, self.start_usd = step, self.spent()
        self.warned, self.message = False, ""
        if rank == 0 and self.guard is not None:
            v = model_verdict(cfg, self.guard, self.start_usd, step)
            if v is not None and v.action == "warn":
                print(f"[vlv-ray] WARNING {v.message}", flush=True)

    def spent(self) -> float:
        """Dollars the run has cost so far (rank 0; other ranks see the last shared figure)."""
        if self.actor is not None and time.monotonic() - self.asked_at >= self.ask_every_s:
            import ray

            self.last = ray.get(self.actor.spent.remote(), timeout=30)
            self.asked_at = time.monotonic()
        return self.last

    def over_budget(self, step: int) -> bool:
        """Collective when a budget is set: True on every rank once rank 0's guard says stop."""
        if self.guard is None:
            return False
        stop = 0.0
        if self.rank == 0 and step > self.start_step:
            spent = self.spent()
            per_step = (spent - self.start_usd) / (step - self.start_step)
            v = self.guard.check(spent, step, self.max_steps, per_step)
            if v.action == "warn" and not self.warned:
                self.warned = True
                print(f"[vlv-ray] WARNING {v.message}", flush=True)
            if v.action == "stop":
                stop, self.message = 1.0, v.message
        flag = torch.tensor([stop])
        if self.world > 1:
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        return bool(flag.item())
