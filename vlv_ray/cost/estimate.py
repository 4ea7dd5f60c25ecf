"""`vlv-ray cost estimate`: the cost model (`model.quote`) for one instance type, beside the cheapest others.

samples = max_steps × global batch; `gpu_hours` = samples ÷ samples/s per GPU (compute only);
`wall_hours` and the dollars are the model's: + gradient all-reduce per optimizer step,
+ expected spot reclaims (spot only), + the CPU head and storage. The per-GPU throughput is
measured (benchmarks/results.json), *estimated* from a measured GPU (model.py), or the
user's `--throughput`, which describes the named instance's GPU only (or, with no instance
named, every GPU, and says so); it never becomes the anchor of another GPU's estimate.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from vlv_ray.config import JobConfig
from vlv_ray.cost import model
from vlv_ray.cost.catalog import Catalog, CatalogError, Price
from vlv_ray.cost.model import RESULTS, gpu_model  # noqa: F401 (the command's defaults)


class NoThroughput(CatalogError):
    """No samples/s per GPU to price with: none measured for the stage, none given (`reason` says
    which stage and where it looked)."""

    def __init__(self, stage: int, results):
        self.reason = f"no measured figure for stage {stage} in {results}"
        super().__init__(f"throughput: required (samples/s per GPU): {self.reason}")


@dataclass
class Row:
    instance_type: str
    cloud: str
    region: str
    gpu_model: str
    gpus_per_node: int
    nodes: int
    samples_per_s_per_gpu: float
    throughput_from: str
    estimated: bool
    settings: list
    gpu_hours: float  # compute only: samples / (samples/s per GPU) / 3600
    comm_s_per_step: float
    wall_hours: float  # the model's: compute + all-reduce (+ expected reclaims, spot)
    spot_wall_hours: float | None
    on_demand_usd: float | None  # GPU nodes + head + storage
    spot_usd: float | None
    spot_price: str  # which zone statistic priced spot
    head_usd: float
    storage_usd: float
    price_date: str
    source: str


def _row(cfg: JobConfig, p: Price, cat: Catalog, got: model.Measured) -> Row | str:
    od = model.quote(cfg, p, "on-demand", cat, got)
    if isinstance(od, str):
        return od
    sp = model.quote(cfg, p, "spot", cat, got) if p.spot_usd_per_hour is not None else None
    sp = sp if isinstance(sp, model.Quote) else None
    samples = cfg.max_steps * cfg.global_batch_size
    return Row(p.instance_type, p.cloud, p.region, p.gpu_model, p.gpus, od.nodes, od.samples_per_s_per_gpu,
               od.throughput_from, od.estimated, od.settings, samples / od.samples_per_s_per_gpu / 3600,
               od.comm_s_per_step, od.wall_hours, sp.wall_hours if sp else None, od.total_usd,
               sp.total_usd if sp else None, cfg.cost.spot_price if sp else "", od.head_usd, od.storage_usd,
               p.price_date, p.source)


def estimate(cfg: JobConfig, cat: Catalog, *, throughput: float | None, instance: str | None,
             results=RESULTS, alternatives: int = 4, source: str = "job") -> dict:
    """The job's instance type (or the cheapest) and the cheapest alternatives (`source`: the job file)."""
    got = model.measured_job(cfg, results)
    if throughput is None and not got.throughput:
        raise NoThroughput(cfg.stage, results)
    instance = instance or cfg.cost.instance_type
    chosen_price = cat.lookup(instance, cfg.cost.region) if instance else None
    if instance and chosen_price is None:
        raise CatalogError(f"instance: {instance!r} is not in the price catalog (add its row with prices_csv=FILE)")
    same_gpu = chosen_price.gpu_model if chosen_price else None

    def measured_for(p: Price) -> model.Measured:
        if throughput is None or same_gpu not in (None, p.gpu_model):
            return got
        where = "given throughput" if same_gpu else "given throughput (assumed for every GPU)"
        row = {"batch_size": cfg.data.batch_size}
        return replace(got, throughput={p.gpu_model: (throughput, where, row)}, memory=got.memory)

    rows = []
    for p in cat.gpu_rows():
        if throughput is not None and not got.throughput and same_gpu not in (None, p.gpu_model):
            continue  # the user's figure describes one GPU; nothing measured to estimate the others from
        r = _row(cfg, p, cat, measured_for(p))
        if isinstance(r, Row):
            rows.append(r)
    if not rows and (why := model.fits_no_gpu(cfg, cat.gpu_rows(), got)):
        raise CatalogError(f"{source}: {why}")
    rows.sort(key=lambda r: r.spot_usd if r.spot_usd is not None else r.on_demand_usd)
    chosen = None
    if chosen_price:
        chosen = next((r for r in rows if (r.instance_type, r.region) == (instance, chosen_price.region)), None)
        if chosen is None:
            why = _row(cfg, chosen_price, cat, measured_for(chosen_price))
            raise CatalogError(f"instance: {instance}: {why}")
    chosen = chosen or (rows[0] if rows else None)
    seen, others = {(chosen.instance_type, chosen.region)} if chosen else set(), []
    for r in rows:  # one row per instance type: its cheapest region
        if r.instance_type not in {o.instance_type for o in others} and (r.instance_type, r.region) not in seen:
            others.append(r)
    return {"job": cfg.name, "stage": cfg.stage, "steps": cfg.max_steps, "global_batch": cfg.global_batch_size,
            "samples": cfg.max_steps * cfg.global_batch_size, "gpus": cfg.scaling.num_workers,
            "instance": asdict(chosen) if chosen else None,
            "cheapest_alternatives": [asdict(r) for r in others[:alternatives]],
            "assumptions": [f"spot priced at the {cfg.cost.spot_price} of the region's zone prices "
                            "(cost.spot_price: min|median|max)",
                            f"{cfg.cost.spot_preemptions_per_node_hour:g} spot reclaims per node-hour, each losing "
                            f"half a checkpoint interval + {cfg.cost.restart_s:g} s",
                            "gradient all-reduce per optimizer step not overlapped with compute",
                            f"memory, {model.memory_basis(cfg.stage, got)}",
                            "* = throughput estimated from a measured GPU by peak and bandwidth (model.py)"]}


@dataclass
class InMarket:
    """The job's estimate in one market: spot where asked and the row has a spot price, else on-demand."""

    row: dict  # `estimate`'s row for the instance (nodes, instance_type, gpu_hours, head_usd, …)
    samples: int
    market: str  # the market priced: "spot" or "on-demand"
    usd: float | None  # None: the catalog has no such price
    wall_hours: float


def in_market(cfg: JobConfig, cat: Catalog, *, throughput: float | None, instance: str | None,
              market: str, source: str = "job") -> InMarket | None:
    """`estimate`'s figure for `instance` (else cost.instance_type, else the cheapest) in `market`, as
    the sweep and `launch` price a job; None: no catalog row can run it. Raises `estimate`'s errors."""
    e = estimate(cfg, cat, throughput=throughput, instance=instance, alternatives=0, source=source)
    row = e["instance"]
    if row is None:
        return None
    if market == "spot" and row["spot_usd"] is not None:
        return InMarket(row, e["samples"], "spot", row["spot_usd"], row["spot_wall_hours"])
    return InMarket(row, e["samples"], "on-demand", row["on_demand_usd"], row["wall_hours"])


def format_estimate(e: dict) -> str:
    lines = [f"{e['job']}: stage {e['stage']}, {e['steps']} steps × {e['global_batch']} = {e['samples']:,} samples "
             f"on {e['gpus']} GPUs"]
    lines.append(f"  {'instance':<16} {'region':<16} {'GPU':<9} {'nodes':>5} {'smp/s/GPU':>9} {'GPU-h':>8} "
                 f"{'wall h':>7} {'on-demand $':>11} {'spot $':>9}  throughput")

    def fmt(r: dict, mark: str) -> str:
        spot = f"{r['spot_usd']:>9,.0f}" if r["spot_usd"] is not None else f"{'-':>9}"
        od = f"{r['on_demand_usd']:>11,.0f}" if r["on_demand_usd"] is not None else f"{'-':>11}"
        est = "*" if r["estimated"] else " "
        return (f"{mark} {r['instance_type']:<16} {r['region']:<16} {r['gpu_model']:<9} {r['nodes']:>5} "
                f"{r['samples_per_s_per_gpu']:>8.1f}{est} {r['gpu_hours']:>8,.0f} {r['wall_hours']:>7.1f} {od} {spot}  "
                f"{r['throughput_from']}{' with ' + ', '.join(r['settings']) if r['settings'] else ''}")
    if e["instance"]:
        lines.append(fmt(e["instance"], "*"))
    lines += [fmt(r, " ") for r in e["cheapest_alternatives"]]
    lines += [f"  assumption: {a}" for a in e["assumptions"]]
    lines.append("  * first column = the job's instance type (cost.instance_type / --instance), else the cheapest")
    return "\n".join(lines)
