"""`vlv-ray cost estimate`: GPU-hours, wall time and dollars of a job before it runs.

samples = max_steps × global batch; GPU-hours = samples / (samples/s per GPU) / 3600;
the job's `scaling.num_workers` GPUs run in parallel, on whole nodes of the instance
type. The per-GPU throughput is, per GPU model: a measured figure from the benchmark
results file (`benchmarks/results.json`, below) for this stage, else `--throughput`.
Every row says which, so an alternative priced with another GPU's throughput is visible.

benchmarks/results.json, written by the step benchmark (one entry per measurement):
    {"train_step": [{"stage": 1, "gpu_model": "H100", "samples_per_s_per_gpu": 52.0,
                     "resolution": 384, "measured_at": "2025-07-01", "command": "…"}]}
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

from vlv_ray.config import JobConfig
from vlv_ray.cost.catalog import Catalog, CatalogError, Price

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results.json"


@dataclass
class Row:
    instance_type: str
    cloud: str
    region: str
    gpu_model: str
    gpus_per_node: int
    nodes: int
    samples_per_s_per_gpu: float
    throughput_from: str  # "measured (benchmarks/results.json)" or "--throughput[ (assumed for every GPU)]"
    gpu_hours: float
    wall_hours: float
    on_demand_usd: float
    spot_usd: float | None
    price_date: str
    source: str


def measured(stage: int, path: Path = RESULTS) -> dict[str, float]:
    """GPU model → measured samples/s/GPU for this stage (newest entry wins)."""
    if not path.is_file():
        return {}
    try:
        entries = json.loads(path.read_text()).get("train_step", [])
        return {e["gpu_model"]: float(e["samples_per_s_per_gpu"]) for e in entries if e.get("stage") == stage}
    except (ValueError, KeyError, TypeError, AttributeError):
        raise CatalogError(f"{path}: expected {{\"train_step\": [{{\"stage\", \"gpu_model\", "
                           f"\"samples_per_s_per_gpu\"}}, …]}}") from None


def row(cfg: JobConfig, p: Price, throughput: float, origin: str) -> Row:
    samples = cfg.max_steps * cfg.global_batch_size
    gpu_hours = samples / throughput / 3600.0
    gpus = cfg.scaling.num_workers
    nodes = math.ceil(gpus / p.gpus)
    wall = gpu_hours / gpus
    spot = p.spot_usd_per_hour
    return Row(p.instance_type, p.cloud, p.region, p.gpu_model, p.gpus, nodes, throughput, origin, gpu_hours, wall,
               nodes * wall * p.on_demand_usd_per_hour, None if spot is None else nodes * wall * spot,
               p.price_date, p.source)


def estimate(cfg: JobConfig, cat: Catalog, *, throughput: float | None, instance: str | None,
             results: Path = RESULTS, alternatives: int = 4) -> dict:
    """The job's instance type (or the cheapest) and the cheapest alternatives."""
    got = measured(cfg.stage, results)
    if throughput is None and not got:
        raise CatalogError("--throughput: required (samples/s per GPU): no measured figure for stage "
                           f"{cfg.stage} in {results}")
    instance = instance or cfg.cost.instance_type
    if instance and cat.lookup(instance, cfg.cost.region) is None:
        raise CatalogError(f"--instance: {instance!r} is not in the price catalog (add it with --prices FILE)")

    # --throughput describes the GPU of the named instance type; other GPUs need their own
    # measured figure. With no instance named it is applied to every GPU, and says so.
    same_gpu = cat.lookup(instance, cfg.cost.region).gpu_model if instance else None

    def rate(p: Price) -> tuple[float, str] | None:
        if p.gpu_model in got:
            return got[p.gpu_model], "measured (benchmarks/results.json)"
        if throughput and same_gpu in (None, p.gpu_model):
            return throughput, "--throughput" if same_gpu else "--throughput (assumed for every GPU)"
        return None

    rows = [row(cfg, p, *r) for p in cat.gpu_rows() if (r := rate(p))]
    rows.sort(key=lambda r: r.spot_usd if r.spot_usd is not None else r.on_demand_usd)
    chosen = next((r for r in rows if r.instance_type == instance), rows[0] if rows else None)
    others = [r for r in rows if r is not chosen][:alternatives]
    return {"job": cfg.name, "stage": cfg.stage, "steps": cfg.max_steps, "global_batch": cfg.global_batch_size,
            "samples": cfg.max_steps * cfg.global_batch_size, "gpus": cfg.scaling.num_workers,
            "instance": asdict(chosen) if chosen else None, "cheapest_alternatives": [asdict(r) for r in others],
            "assumptions": ["per-GPU throughput constant for the whole run (no data stalls, no restarts)",
                            "GPU nodes only: add the CPU head's on-demand price × wall time",
                            "spot prices vary by zone and hour: the catalog's spot column is approximate"]}


def format_estimate(e: dict) -> str:
    lines = [f"{e['job']}: stage {e['stage']}, {e['steps']} steps × {e['global_batch']} = {e['samples']:,} samples "
             f"on {e['gpus']} GPUs"]
    head = f"  {'instance':<16} {'GPU':<10} {'nodes':>5} {'smp/s/GPU':>9} {'GPU-h':>9} {'wall h':>8} " \
           f"{'on-demand $':>12} {'spot $':>10}  throughput"
    lines.append(head)

    def fmt(r: dict, mark: str) -> str:
        spot = f"{r['spot_usd']:>10,.0f}" if r["spot_usd"] is not None else f"{'-':>10}"
        return (f"{mark} {r['instance_type']:<16} {r['gpu_model']:<10} {r['nodes']:>5} {r['samples_per_s_per_gpu']:>9.1f} "
                f"{r['gpu_hours']:>9,.0f} {r['wall_hours']:>8.1f} {r['on_demand_usd']:>12,.0f} {spot}  "
                f"{r['throughput_from']}")
    if e["instance"]:
        lines.append(fmt(e["instance"], "*"))
    lines += [fmt(r, " ") for r in e["cheapest_alternatives"]]
    lines += [f"  assumption: {a}" for a in e["assumptions"]]
    lines.append("  * = the job's instance type (cost.instance_type / --instance), else the cheapest")
    return "\n".join(lines)
