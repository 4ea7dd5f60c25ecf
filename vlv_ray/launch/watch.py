"""What the launcher sees of its cluster while it lives: nodes, dollars, capacity.

`ClusterWatch.poll()` reads the head's node table through the dashboard's state API (dead
nodes stay in it with their end time) and prices every node's whole life with the cost
model's own pieces (`meter.describe` → catalog price × seconds, into a `Ledger`), from
`ray up` (the head bills from its launch) until teardown, whether or not a job's driver is
metering. So the figure is exact after an interruption too: a re-attached launcher reads
the same lifetimes. The ledger lives beside the launch state (`<name>.ledger.json`).

Capacity: while the autoscaler reports demand it cannot place (tasks or placement groups
waiting) and no node of the current pool has joined, a clock runs; past `capacity_wait_s`
`next_pool()` names the pool to switch to, and `switched()` records it, priced.
"""
from __future__ import annotations

import json
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field

from vlv_ray.config import CostConfig
from vlv_ray.cost import catalog as catalog_mod
from vlv_ray.cost.ledger import Ledger
from vlv_ray.cost.meter import MARKET, NODE_TYPE, describe
from vlv_ray.launch.clusterfile import Pool
from vlv_ray.launch.state import LaunchState


@dataclass
class Snapshot:
    at: float
    alive: list[dict] = field(default_factory=list)  # {"node_type", "market", "head"}
    usd: float = 0.0
    demand: bool = False

    def by_market(self) -> str:
        counts = Counter(("head " if n["head"] else "") + n["market"] for n in self.alive)
        return ", ".join(f"{v} {k}" for k, v in sorted(counts.items())) or "none"


def dashboard_json(dashboard: str, path: str, *, method: str = "GET", timeout: float = 30.0) -> dict:
    """One call to the head's dashboard API, with the cluster's token, bounded by `timeout` (Ray's
    job client sets none: a loaded head could hold a call for minutes)."""
    from ray._private.authentication.http_token_authentication import get_auth_headers_if_auth_enabled

    req = urllib.request.Request(dashboard + path, method=method, headers=get_auth_headers_if_auth_enabled({}))
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read().decode() or "{}")


class ClusterWatch:
    def __init__(self, state: LaunchState, pools: list[Pool], cost: CostConfig, stage: int,
                 capacity_wait_s: float):
        self.state, self.pools, self.cost, self.stage = state, pools, cost, stage
        self.capacity_wait_s = capacity_wait_s
        self.catalog = catalog_mod.load(cost.prices_csv)
        path = state.sibling(".ledger.json")
        self.ledger = Ledger.from_json(json.loads(path.read_text())) if path.is_file() else Ledger(run=state.name)
        self.last: Snapshot | None = None
        self.waiting_since: float | None = None  # demand unmet and no node of the pool: since when

    # ------------------------------------------------------------------ polling

    def _get(self, path: str) -> dict:
        return dashboard_json(self.state.dashboard, path)

    def nodes(self) -> list:
        from ray.util.state import list_nodes

        return list_nodes(address=self.state.dashboard, detail=True, limit=10000, raise_on_missing_output=False)

    def demand(self) -> bool:
        """The autoscaler's report: resources or placement groups waiting for a node."""
        try:
            data = self._get("/api/cluster_status")["data"]
            status = data.get("clusterStatus") or data.get("cluster_status") or {}
        except (OSError, ValueError, KeyError):
            return False
        report = status.get("loadMetricsReport") or status.get("load_metrics_report") or {}
        return bool(report.get("resourceDemand") or report.get("resource_demand") or report.get("pgDemand")
                    or report.get("pg_demand"))

    def poll(self) -> Snapshot:
        now = time.time()
        snap = Snapshot(at=now, demand=self.demand())
        for n in self.nodes():
            node = {"NodeID": n.node_id, "Labels": n.labels or {}, "Resources": n.resources_total or {}}
            e = self.ledger.entry(n.node_id, self.stage, lambda node=node: describe(node, self.stage, self.catalog,
                                                                                    self.cost))
            start = (n.start_time_ms or now * 1000) / 1000
            if n.is_head_node and self.state.up_started_at:
                start = min(start, self.state.up_started_at)  # billed from launch, before Ray ran on it
            end = n.end_time_ms / 1000 if n.state == "DEAD" and n.end_time_ms else now
            e.seconds = max(e.seconds, end - start)
            if n.state == "ALIVE":
                labels = n.labels or {}
                snap.alive.append({"node_type": labels.get(NODE_TYPE, "?"), "market": labels.get(MARKET, e.market),
                                   "head": bool(n.is_head_node), "key": f"{n.node_id}/{self.stage}"})
        snap.usd = self.ledger.total_usd
        self.last = snap
        self.save()
        return snap

    def save(self) -> None:
        self.ledger.updated_at = time.time()
        path = self.state.sibling(".ledger.json")
        path.write_text(json.dumps(self.ledger.to_json(), indent=1))

    def finish(self, down_at: float) -> float:
        """Teardown done: nodes alive at the last poll were billed until now."""
        if self.last is not None:
            for n in self.last.alive:
                self.ledger.entries[n["key"]].seconds += max(0.0, down_at - self.last.at)
        self.save()
        return self.ledger.total_usd

    # ------------------------------------------------------------------ capacity

    def next_pool(self, snap: Snapshot) -> Pool | None:
        """The pool to switch to, once the current one has left demand unmet past the wait."""
        if len(self.pools) < 2 or self.state.pool is None:
            return None
        joined = any(n["node_type"] == self.state.pool for n in snap.alive)
        if joined or not snap.demand:
            self.waiting_since = None
            return None
        self.waiting_since = self.waiting_since or max(snap.at, self.state.pool_since or snap.at)
        if snap.at - self.waiting_since < self.capacity_wait_s:
            return None
        names = [p.node_type for p in self.pools]
        i = names.index(self.state.pool) if self.state.pool in names else -1
        return self.pools[(i + 1) % len(self.pools)]

    def pool(self, name: str | None) -> Pool | None:
        return next((p for p in self.pools if p.node_type == name), None)

    def switched(self, to: Pool, waited_s: float) -> str:
        """Record a switch in the launch state; the line that says it, with the price difference."""
        old = self.pool(self.state.pool)
        diff = ""
        if old and old.usd_per_hour is not None and to.usd_per_hour is not None:
            diff = f", {to.usd_per_hour - old.usd_per_hour:+.3f} $/h per node"
        wrapped = names_wrap(self.pools, to)
        self.state.switches.append({"at": time.time(), "from": self.state.pool, "to": to.node_type,
                                    "from_usd_per_hour": old.usd_per_hour if old else None,
                                    "to_usd_per_hour": to.usd_per_hour, "waited_s": round(waited_s, 1)})
        self.state.pool, self.state.pool_since = to.node_type, time.time()
        self.waiting_since = None
        return (f"capacity: no {old.node_type if old else '?'} node joined in {waited_s:.0f} s with work waiting; "
                f"switching to {to.describe()}{diff}{wrapped}")


def names_wrap(pools: list[Pool], to: Pool) -> str:
    if to is pools[0]:
        on_demand = any(p.market == "on-demand" for p in pools)
        return "" if on_demand else " (every spot pool tried: back to the first; --allow-on-demand adds on-demand)"
    return ""


def status_line(step: str | None, rate: str | None, snap: Snapshot | None, budget: float | None,
                pool: str | None) -> str:
    usd = f"${snap.usd:.4f}" if snap else "$?"
    money = f"{usd} of ${budget:.2f}" if budget else usd
    nodes = snap.by_market() if snap else "?"
    return (f"[launch] step {step or '-'} | {rate or '-'} samples/s | {money} | nodes: {nodes}"
            f"{f' | pool {pool}' if pool else ''}")
