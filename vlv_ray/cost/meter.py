"""Node-seconds: what each node of the cluster is, what it costs, how long it was up.

Pure bookkeeping, fed with the GCS node table (`ray.nodes()`, the same table Ray's state
API reads) at each poll. A node's instance type and market come from the labels that the
cluster definitions in `cluster/` set:

    vlv-ray/instance-type   the catalog key (g6e.2xlarge, a2-highgpu-1g, …)
    vlv-ray/market          spot | on-demand   (else Ray's own ray.io/market-type, else the job's)
    vlv-ray/node-type       the cluster definition's node type (else Ray's ray.io/node-group)

A node with no instance-type label (a laptop, CI, a plain `ray start`) is priced at the
job's `cost.local_node_usd_per_hour` (default $0), so the same code path always runs.
A catalogued node is priced as the cost model prices it (`model.hourly`: spot at the job's
`cost.spot_price` statistic), so a run's ledger and its estimate use one price.
Idle nodes cost money and are counted like busy ones.

Between two polls a node that was up at both is charged the whole interval; one that
appeared or vanished in between is charged half of it (its expected share), so the error
per node is at most half a poll interval at each end.
"""
from __future__ import annotations

import logging

from vlv_ray.config import CostConfig
from vlv_ray.cost.catalog import Catalog
from vlv_ray.cost.model import hourly, storage_hourly
from vlv_ray.cost.ledger import Entry, Ledger

log = logging.getLogger(__name__)

INSTANCE = "vlv-ray/instance-type"
MARKET = "vlv-ray/market"
NODE_TYPE = "vlv-ray/node-type"
RAY_MARKET = "ray.io/market-type"
RAY_NODE_GROUP = "ray.io/node-group"


def _market(raw: str) -> str:
    raw = raw.strip().lower().replace("_", "-")
    return "on-demand" if raw in ("on-demand", "ondemand", "on demand") else raw


def describe(node: dict, stage: int, catalog: Catalog, cost: CostConfig) -> Entry:
    """A fresh ledger entry for a node of `ray.nodes()`: its type, market and price."""
    labels = node.get("Labels") or {}
    is_head = "node:__internal_head__" in (node.get("Resources") or {})
    instance = labels.get(INSTANCE)
    market = _market(labels.get(MARKET) or labels.get(RAY_MARKET) or cost.market)
    node_type = labels.get(NODE_TYPE) or labels.get(RAY_NODE_GROUP) or ("head" if is_head else "worker")
    if not instance:
        return Entry(node_id=node["NodeID"], node_type=node_type if labels.get(NODE_TYPE) else "local",
                     instance_type="local", market=market, stage=stage, usd_per_hour=cost.local_node_usd_per_hour)
    price = catalog.lookup(instance, labels.get("vlv-ray/region") or cost.region)
    usd = hourly(price, market, cost) if price else None
    if usd is None:
        log.warning("cost: instance type %r of node %s has no %s price in the catalog: counted at $0 "
                    "(add a row with cost.prices_csv)", instance, node["NodeID"][:8], market)
        return Entry(node_id=node["NodeID"], node_type=node_type, instance_type=instance, market=market,
                     stage=stage, usd_per_hour=0.0, priced=False)
    return Entry(node_id=node["NodeID"], node_type=node_type, instance_type=instance, market=market,
                 stage=stage, usd_per_hour=usd)


STORAGE = "storage"  # the ledger entry of the run's object storage (node id and node type)


class NodeMeter:
    """Adds node-seconds to a ledger at each `observe(nodes, now)`; with `storage`, the run's
    object storage too, at `model.storage_hourly` (what a quote adds for it)."""

    def __init__(self, ledger: Ledger, stage: int, catalog: Catalog, cost: CostConfig, *, storage: bool = False):
        self.ledger, self.stage, self.catalog, self.cost = ledger, stage, catalog, cost
        self.storage_usd_per_hour = storage_hourly(cost) if storage else 0.0
        self.alive: set[str] = set()  # nodes up at the previous poll
        self.last: float | None = None

    def observe(self, nodes: list[dict], now: float) -> None:
        up = {n["NodeID"]: n for n in nodes if n.get("Alive")}
        dt = 0.0 if self.last is None else max(0.0, now - self.last)
        for node_id in up.keys() | self.alive:
            share = dt if (node_id in up and node_id in self.alive) else dt / 2
            if node_id in up:
                e = self.ledger.entry(node_id, self.stage, lambda n=up[node_id]: describe(n, self.stage, self.catalog,
                                                                                          self.cost))
            else:
                e = self.ledger.entries[f"{node_id}/{self.stage}"]
            e.seconds += share
        if self.storage_usd_per_hour:
            self.ledger.entry(STORAGE, self.stage, lambda: Entry(
                node_id=STORAGE, node_type=STORAGE, instance_type="object storage", market="-", stage=self.stage,
                usd_per_hour=self.storage_usd_per_hour)).seconds += dt
        self.alive, self.last = set(up), now
