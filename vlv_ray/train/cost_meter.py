"""Dollars spent so far, for the log line and the checkpoint ledger.

Worker-hours of this run × `cost.price_per_worker_hour_usd`, on top of what the last
checkpoint's ledger held. The cost tracker (price catalog, budget guard) replaces this.
"""
from __future__ import annotations

import time

from vlv_ray.config import JobConfig


class CostMeter:
    def __init__(self, cfg: JobConfig, world: int, ledger_usd: float = 0.0):
        self.rate_per_s = (cfg.cost.price_per_worker_hour_usd or 0.0) * world / 3600.0
        self.ledger_usd, self.started_at = ledger_usd, time.time()

    def total_usd(self) -> float:
        return self.ledger_usd + (time.time() - self.started_at) * self.rate_per_s
