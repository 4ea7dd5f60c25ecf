"""The price catalog: one row per (cloud, region, instance type), from a dated snapshot.

`snapshot.csv` is produced by `vlv-ray cost prices --from <SkyPilot vms.csv> … --replace
--save` (see `skypilot.py`); its `#` lines name each cloud's source repository, commit and
date. Users extend or override it with their own CSV, either a newer SkyPilot download or
rows of the user format below (`USER_COLUMNS`; a row with the same cloud, region and
instance type replaces the snapshot's), given as `cost.prices_csv` in the job, `--prices`
or `cost prices --from`. A bad file is a `CatalogError` naming the file, the row and the
column; a file in neither format is one too.
"""
from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, replace
from pathlib import Path

from vlv_ray.cost import skypilot

SNAPSHOT = Path(__file__).with_name("snapshot.csv")
USER_COLUMNS = ("cloud", "region", "instance_type", "gpu_model", "gpus", "vcpus", "memory_gib",
                "on_demand_usd_per_hour", "spot_usd_per_hour", "price_date", "source", "note")
COLUMNS = USER_COLUMNS  # the user format's header (tests and docs name it)
SNAPSHOT_COLUMNS = ("cloud", "region", "instance_type", "gpu_model", "gpus", "gpu_memory_gib", "vcpus", "memory_gib",
                    "on_demand_usd_per_hour", "spot_min", "spot_median", "spot_max", "zones", "cheapest_zone")
MARKETS = ("spot", "on-demand")
SPOT_STATS = ("min", "median", "max")
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
    on_demand_usd_per_hour: float | None  # None: the catalog lists no on-demand price
    spot_usd_per_hour: float | None  # the median across the region's zones; None: no spot price
    price_date: str
    source: str
    note: str = ""
    spot_min: float | None = None
    spot_max: float | None = None
    gpu_memory_gib: float = 0.0
    zones: int = 1
    cheapest_zone: str = ""

    def usd_per_hour(self, market: str, spot_stat: str = "median") -> float | None:
        """The hourly price in a market; spot falls back to on-demand where no spot price is listed."""
        if market == "spot":
            spot = {"min": self.spot_min, "median": self.spot_usd_per_hour, "max": self.spot_max}[spot_stat]
            if spot is not None:
                return spot
        return self.on_demand_usd_per_hour


def _number(where: str, col: str, raw: str, cast, *, optional: bool = False):
    if (raw or "").strip() == "" and optional:
        return None
    try:
        v = cast(raw)
    except (TypeError, ValueError):
        raise CatalogError(f"{where}: {col}: got {raw!r}, expected a number") from None
    if v < 0:
        raise CatalogError(f"{where}: {col}: got {raw!r}, expected a number >= 0")
    return v


def parse(text: str, origin: str) -> list[Price]:
    """Rows of the user format."""
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in USER_COLUMNS[:10] if c not in (reader.fieldnames or [])]
    if missing:
        raise CatalogError(f"{origin}: header: missing column(s) {', '.join(missing)}; "
                           f"expected {','.join(USER_COLUMNS)}")
    rows = []
    for i, r in enumerate(reader, start=2):  # line 1 is the header
        where = f"{origin}: row {i}"
        for col in ("cloud", "region", "instance_type"):
            if not (r.get(col) or "").strip():
                raise CatalogError(f"{where}: {col}: expected a non-empty value")
        if not _DATE.match((r.get("price_date") or "").strip()):
            raise CatalogError(f"{where}: price_date: got {r.get('price_date')!r}, expected YYYY-MM or YYYY-MM-DD")
        spot = _number(where, "spot_usd_per_hour", r["spot_usd_per_hour"], float, optional=True)
        rows.append(Price(
            cloud=r["cloud"].strip(), region=r["region"].strip(), instance_type=r["instance_type"].strip(),
            gpu_model=(r.get("gpu_model") or "").strip(),
            gpus=_number(where, "gpus", r["gpus"], int), vcpus=_number(where, "vcpus", r["vcpus"], int),
            memory_gib=_number(where, "memory_gib", r["memory_gib"], float),
            on_demand_usd_per_hour=_number(where, "on_demand_usd_per_hour", r["on_demand_usd_per_hour"], float),
            spot_usd_per_hour=spot, spot_min=spot, spot_max=spot,
            price_date=r["price_date"].strip(), source=(r.get("source") or "").strip(),
            note=(r.get("note") or "").strip()))
    return rows


# ---------------------------------------------------------------------------- the snapshot


def _meta(text: str) -> dict[str, dict[str, str]]:
    """`# source <cloud> key=value …` lines → {cloud: {key: value}}."""
    out = {}
    for line in text.splitlines():
        if line.startswith("# source "):
            cloud, *pairs = line[len("# source "):].split()
            out[cloud] = dict(p.split("=", 1) for p in pairs if "=" in p)
    return out


def read_snapshot(text: str, origin: str) -> tuple[list[Price], dict]:
    meta = _meta(text)
    body = "\n".join(line for line in text.splitlines() if not line.startswith("#"))
    rows = []
    for i, r in enumerate(csv.DictReader(io.StringIO(body)), start=2):
        where, m = f"{origin}: row {i}", meta.get(r["cloud"], {})
        f = lambda col: _number(where, col, r[col], float, optional=True)  # noqa: E731
        rows.append(Price(r["cloud"], r["region"], r["instance_type"], r["gpu_model"], int(r["gpus"]), int(r["vcpus"]),
                          float(r["memory_gib"]), f("on_demand_usd_per_hour"), f("spot_median"),
                          m.get("date", "?"), f"https://github.com/{m.get('repo', '?')}/blob/{m.get('commit', '?')}/"
                          f"{m.get('path', '?')}",
                          spot_min=f("spot_min"), spot_max=f("spot_max"), gpu_memory_gib=float(r["gpu_memory_gib"]),
                          zones=int(r["zones"]), cheapest_zone=r["cheapest_zone"]))
    return rows, meta


def write_snapshot(rows: list[Price], meta: dict, path: Path) -> None:
    def fmt(v):
        return "" if v is None else f"{v:g}"
    lines = ["# Prices per (cloud, region, instance type): GPU instance types and CPU heads, every region.",
             "# Spot: min/median/max across the region's zones. Written by `vlv-ray cost prices --from … --save`."]
    lines += [f"# source {cloud} " + " ".join(f"{k}={v}" for k, v in m.items()) for cloud, m in sorted(meta.items())]
    lines.append(",".join(SNAPSHOT_COLUMNS))
    for p in sorted(rows, key=lambda p: (p.cloud, p.instance_type, p.region)):
        lines.append(",".join([p.cloud, p.region, p.instance_type, p.gpu_model, str(p.gpus), fmt(p.gpu_memory_gib),
                               str(p.vcpus), fmt(p.memory_gib), fmt(p.on_demand_usd_per_hour), fmt(p.spot_min),
                               fmt(p.spot_usd_per_hour), fmt(p.spot_max), str(p.zones), p.cheapest_zone]))
    path.write_text("\n".join(lines) + "\n")


def read_file(path: str, meta: dict | None = None) -> tuple[list[Price], set[str]]:
    """A user's CSV in either format → rows, and the clouds it covers (a SkyPilot file's source goes into `meta`)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise CatalogError(f"{path}: no such prices CSV")
    text = p.read_text()
    header = next(csv.reader(io.StringIO(text)), [])
    if skypilot.is_skypilot(header):
        try:
            cloud = skypilot.guess_cloud(text, path)
            regional = skypilot.parse(text, path, cloud)
        except skypilot.FormatError as e:
            raise CatalogError(str(e)) from None
        src = {"repo": "(user file)", "path": p.name, "commit": "-", "date": "?"}
        if meta is not None:
            meta[cloud] = src
        return [Price(**r, price_date=src["date"], source=path) for r in regional], {cloud}
    if set(USER_COLUMNS[:10]) <= set(header):
        rows = parse(text, path)
        return rows, {r.cloud for r in rows}
    raise CatalogError(f"{path}: header: expected SkyPilot's vms.csv columns ({','.join(skypilot.COLUMNS)}) "
                       f"or the user format ({','.join(USER_COLUMNS)})")


class Catalog:
    def __init__(self, rows: list[Price], meta: dict | None = None):
        by_key: dict[tuple[str, str, str], Price] = {}
        for p in rows:  # later rows (the user's CSV) replace earlier ones
            by_key[(p.cloud, p.region, p.instance_type)] = p
        self.rows = list(by_key.values())
        self.meta = meta or {}

    def lookup(self, instance_type: str, region: str | None = None) -> Price | None:
        """The row for an instance type in `region`; without one (or none there), its cheapest region."""
        hits = [p for p in self.rows if p.instance_type == instance_type]
        if region:
            hits = [p for p in hits if p.region == region] or hits
        priced = [p for p in hits if p.on_demand_usd_per_hour is not None] or hits
        return min(priced, key=lambda p: (p.on_demand_usd_per_hour or 0.0, p.region)) if priced else None

    def gpu_rows(self) -> list[Price]:
        return [p for p in self.rows if p.gpus > 0]

    def head(self, cloud: str, region: str) -> Price | None:
        """The CPU head for a cluster in (cloud, region): the smallest CPU row listed there."""
        heads = [p for p in self.rows if p.cloud == cloud and p.region == region and p.gpus == 0
                 and p.on_demand_usd_per_hour is not None]
        return min(heads, key=lambda p: (p.vcpus, p.on_demand_usd_per_hour)) if heads else None


def load(extra_csv: str | list[str] | None = None, *, replace_clouds: bool = False) -> Catalog:
    """The snapshot, extended/overridden by `extra_csv` (local paths, either format).

    With `replace_clouds`, a file's clouds drop the snapshot's rows of those clouds first."""
    rows, meta = read_snapshot(SNAPSHOT.read_text(), SNAPSHOT.name)
    meta = {k: dict(v) for k, v in meta.items()}
    for path in ([extra_csv] if isinstance(extra_csv, str) else (extra_csv or [])):
        new, clouds = read_file(path, meta)
        if replace_clouds:
            rows = [r for r in rows if r.cloud not in clouds]
        rows += new
    return Catalog(rows, meta)


def with_source(cat: Catalog, cloud: str, **fields: str) -> None:
    """Record where a cloud's rows came from (repo, path, commit, date) before `write_snapshot`."""
    cat.meta.setdefault(cloud, {}).update(fields)
    cat.rows = [replace(p, price_date=fields.get("date", p.price_date)) if p.cloud == cloud else p for p in cat.rows]
