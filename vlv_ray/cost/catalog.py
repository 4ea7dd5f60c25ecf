"""The price catalog: one row per (cloud, region, instance type), from `prices.csv`.

Users extend or override it with their own CSV (same header; a row with the same
cloud, region and instance type replaces the shipped one), given as `cost.prices_csv`
in the job or `--prices` on the command line. A bad file is a `CatalogError` naming
the file, the row and the column.
"""
from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from pathlib import Path

SHIPPED = Path(__file__).with_name("prices.csv")
COLUMNS = ("cloud", "region", "instance_type", "gpu_model", "gpus", "vcpus", "memory_gib",
           "on_demand_usd_per_hour", "spot_usd_per_hour", "price_date", "source", "note")
MARKETS = ("spot", "on-demand")
_DATE = re.compile(r"^\d{4}-\d{2}(-\d{2})?$")


class CatalogError(ValueError):
    """A prices CSV that cannot be used; the message names file, row and column."""


@dataclass(frozen=True)
class Price:
    cloud: str
    region: str
    instance_type: str
    gpu_model: str  # "" for CPU-only instances
    gpus: int
    vcpus: int
    memory_gib: float
    on_demand_usd_per_hour: float
    spot_usd_per_hour: float | None  # None: no spot price known
    price_date: str
    source: str
    note: str = ""

    def usd_per_hour(self, market: str) -> float:
        if market == "spot" and self.spot_usd_per_hour is not None:
            return self.spot_usd_per_hour
        return self.on_demand_usd_per_hour


def _number(where: str, col: str, raw: str, cast, *, optional: bool = False):
    if raw.strip() == "" and optional:
        return None
    try:
        v = cast(raw)
    except ValueError:
        raise CatalogError(f"{where}: {col}: got {raw!r}, expected a number") from None
    if v < 0:
        raise CatalogError(f"{where}: {col}: got {raw!r}, expected a number >= 0")
    return v


def parse(text: str, origin: str) -> list[Price]:
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in COLUMNS[:10] if c not in (reader.fieldnames or [])]
    if missing:
        raise CatalogError(f"{origin}: header: missing column(s) {', '.join(missing)}; expected {','.join(COLUMNS)}")
    rows = []
    for i, r in enumerate(reader, start=2):  # line 1 is the header
        where = f"{origin}: row {i}"
        for col in ("cloud", "region", "instance_type"):
            if not (r.get(col) or "").strip():
                raise CatalogError(f"{where}: {col}: expected a non-empty value")
        if not _DATE.match((r.get("price_date") or "").strip()):
            raise CatalogError(f"{where}: price_date: got {r.get('price_date')!r}, expected YYYY-MM or YYYY-MM-DD")
        rows.append(Price(
            cloud=r["cloud"].strip(), region=r["region"].strip(), instance_type=r["instance_type"].strip(),
            gpu_model=(r.get("gpu_model") or "").strip(),
            gpus=_number(where, "gpus", r["gpus"], int), vcpus=_number(where, "vcpus", r["vcpus"], int),
            memory_gib=_number(where, "memory_gib", r["memory_gib"], float),
            on_demand_usd_per_hour=_number(where, "on_demand_usd_per_hour", r["on_demand_usd_per_hour"], float),
            spot_usd_per_hour=_number(where, "spot_usd_per_hour", r["spot_usd_per_hour"], float, optional=True),
            price_date=r["price_date"].strip(), source=(r.get("source") or "").strip(),
            note=(r.get("note") or "").strip()))
    return rows


class Catalog:
    def __init__(self, rows: list[Price]):
        by_key: dict[tuple[str, str, str], Price] = {}
        for p in rows:  # later rows (the user's CSV) replace earlier ones
            by_key[(p.cloud, p.region, p.instance_type)] = p
        self.rows = list(by_key.values())

    def lookup(self, instance_type: str, region: str | None = None) -> Price | None:
        """The row for an instance type; `region` picks one where several regions are listed."""
        hits = [p for p in self.rows if p.instance_type == instance_type]
        if region:
            hits = [p for p in hits if p.region == region] or hits
        return hits[-1] if hits else None

    def gpu_rows(self) -> list[Price]:
        return [p for p in self.rows if p.gpus > 0]


def load(extra_csv: str | None = None) -> Catalog:
    """The shipped catalog, extended/overridden by `extra_csv` (a local path) if given."""
    rows = parse(SHIPPED.read_text(), str(SHIPPED.name))
    if extra_csv:
        p = Path(extra_csv).expanduser()
        if not p.is_file():
            raise CatalogError(f"{extra_csv}: no such prices CSV")
        rows += parse(p.read_text(), extra_csv)
    return Catalog(rows)
