"""The cost ledger of one run: node-seconds × price, per node, kept next to the checkpoints.

    <storage_path>/<name>/cost/ledger.json

One entry per (node, stage): the node's type, instance type and market, the price used,
and the seconds it was up while the run's driver was tracking. A restarted driver loads
the file and keeps adding to it, so a resumed run continues its total. `breakdown()`
groups entries by node type, instance type, market and stage for `vlv-ray cost report`.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

from vlv_ray import storage

FILE = "ledger.json"


def ledger_uri(run_uri: str) -> str:
    return storage.join(run_uri, "cost", FILE)


@dataclass
class Entry:
    node_id: str
    node_type: str  # the cluster definition's node type (e.g. gpu_l40s_spot), or "local"
    instance_type: str  # the catalog key, or "local" for an unlabelled node
    market: str  # spot | on-demand
    stage: int
    usd_per_hour: float
    seconds: float = 0.0
    priced: bool = True  # False: the instance type is not in the catalog (counted at $0)

    @property
    def usd(self) -> float:
        return self.seconds / 3600.0 * self.usd_per_hour


@dataclass
class Ledger:
    run: str
    entries: dict[str, Entry] = field(default_factory=dict)  # key: f"{node_id}/{stage}"
    updated_at: float = 0.0
    sessions: list[dict[str, float | None]] = field(default_factory=list)  # {start, stop}: when a driver metered

    def entry(self, node_id: str, stage: int, make) -> Entry:
        key = f"{node_id}/{stage}"
        if key not in self.entries:
            self.entries[key] = make()
        return self.entries[key]

    @property
    def total_usd(self) -> float:
        return sum(e.usd for e in self.entries.values())

    @property
    def metered_s(self) -> float:
        """Seconds the run's drivers metered, every session summed (a resumed run's too); a session
        whose driver died before closing it counts until the ledger's last save."""
        return sum(max(0.0, (s["stop"] or self.updated_at) - s["start"]) for s in self.sessions)

    def breakdown(self) -> list[dict[str, Any]]:
        groups: dict[tuple, dict[str, Any]] = {}
        for e in self.entries.values():
            k = (e.node_type, e.instance_type, e.market, e.stage)
            g = groups.setdefault(k, {"node_type": e.node_type, "instance_type": e.instance_type, "market": e.market,
                                      "stage": e.stage, "usd_per_hour": e.usd_per_hour, "nodes": 0,
                                      "node_hours": 0.0, "usd": 0.0, "priced": True})
            g["nodes"] += 1
            g["node_hours"] += e.seconds / 3600.0
            g["usd"] += e.usd
            g["priced"] = g["priced"] and e.priced
        return sorted(groups.values(), key=lambda g: -g["usd"])

    def to_json(self) -> dict[str, Any]:
        return {"run": self.run, "updated_at": self.updated_at, "total_usd": self.total_usd,
                "breakdown": self.breakdown(), "sessions": self.sessions,
                "entries": {k: asdict(e) for k, e in self.entries.items()}}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Ledger":
        return cls(run=d["run"], updated_at=d.get("updated_at", 0.0), sessions=d.get("sessions", []),
                   entries={k: Entry(**e) for k, e in d.get("entries", {}).items()})

    def save(self, run_uri: str, **kw) -> None:
        self.updated_at = time.time()
        storage.write_json_atomic(ledger_uri(run_uri), self.to_json(), **kw)

    @classmethod
    def load(cls, run_uri: str, run: str, **kw) -> "Ledger":
        """The run's ledger from storage, or an empty one for a fresh run."""
        uri = ledger_uri(run_uri)
        if not storage.exists(uri, **kw):
            return cls(run=run)
        return cls.from_json(storage.read_json(uri, **kw))


def format_report(led: Ledger) -> str:
    head = f"{'node type':<20} {'instance':<16} {'market':<10} {'stage':>5} {'nodes':>5} {'$/h':>8} " \
           f"{'node-hours':>11} {'$':>11}"
    lines = [f"cost of run {led.run} (ledger updated {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(led.updated_at))})",
             head, "-" * len(head)]
    for g in led.breakdown():
        flag = "" if g["priced"] else "  (not in the catalog: counted at $0)"
        lines.append(f"{g['node_type']:<20} {g['instance_type']:<16} {g['market']:<10} {g['stage']:>5} "
                     f"{g['nodes']:>5} {g['usd_per_hour']:>8.3f} {g['node_hours']:>11.4f} {g['usd']:>11.4f}{flag}")
    lines.append(f"{'total':<78} {led.total_usd:>11.4f}")
    return "\n".join(lines)
