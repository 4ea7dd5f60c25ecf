"""`cost:` in a job: the live ledger, the budget guard and the cost model's stated assumptions.

Part of the job schema (`vlv_ray.config.JobConfig.cost`, validated the same strict way); read
by vlv_ray/cost. Like every section it imports nothing of the project but `vlv_ray.typed`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from vlv_ray.typed import _range


@dataclass
class CostConfig:
    """Dollars: the live ledger (vlv_ray/cost), the budget guard and `vlv-ray cost estimate`."""

    instance_type: str | None = None  # the GPU worker's instance type, for `cost estimate` (a catalog row)
    market: Literal["spot", "on-demand"] = "spot"  # for nodes whose labels do not say
    region: str | None = None  # picks a catalog row where several regions list the instance type
    prices_csv: str | None = None  # a CSV that extends/overrides vlv_ray/cost/snapshot.csv
    # A node whose labels name no instance type (a laptop, CI, a plain `ray start`) costs this.
    local_node_usd_per_hour: float = field(default=0.0, metadata=_range(0.0))
    budget_usd: float | None = field(default=None, metadata=_range(0.0, lo_open=True))
    poll_s: float = field(default=10.0, metadata=_range(0.0, lo_open=True))  # how often the ledger reads the nodes
    # The cost model's stated assumptions (vlv_ray/cost/model.py); a job overrides them here.
    spot_price: Literal["min", "median", "max"] = "median"  # which of a region's zone spot prices to plan and meter with
    spot_preemptions_per_node_hour: float = field(default=0.05, metadata=_range(0.0))  # spot reclaims per node-hour
    restart_s: float = field(default=600.0, metadata=_range(0.0))  # a reclaim's replacement node + resume
    storage_gb: float = field(default=1000.0, metadata=_range(0.0))  # shards + checkpoints held during the run
    storage_usd_per_gb_month: float = field(default=0.023, metadata=_range(0.0))  # object storage list price
    network_gbps_if_unknown: float = field(default=10.0, metadata=_range(0.0, lo_open=True))  # see cost/hardware.py
