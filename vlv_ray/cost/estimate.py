"""`vlv-ray cost estimate`: GPU-hours, wall time and dollars of a job before it runs.

samples = max_steps × global batch; GPU-hours = samples / (samples/s per GPU) / 3600;
the job's `scaling.num_workers` GPUs run in parallel, on whole nodes of the instance
type. The per-GPU throughput is, per GPU model: a measured figure from the benchmark
results file (`benchmarks/results.json`, below) for this stage, else `--throughput`.
Every row says which, so an alternative priced with another GPU's throughput is visible.

benchmarks/results.json is what `benchmarks/bench_step.py` appends (one row per measurement):
    {"results": [{"bench": "step", "stage": 1, "preset": "paper", "config": "ours",
                  "device": "NVIDIA H200", "batch_size": 32, "resolution": 384,
                  "samples_per_s_per_gpu": 76.71, "date": "2026-11-26", "command": "…"}, …]}
Only paper-size rows of "ours" at the job's resolution count; among them a row at the job's
per-GPU batch size wins, else the newest. A GPU model with no measurement of its own may
borrow one from the same chip (an H100 from an H200: same SMs and clocks, 0.70× the memory
bandwidth), and the row says so.
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
    throughput_from: str  # "measured on <device>, batch N (date)[; borrowed …]" or "--throughput[ (assumed for every GPU)]"
    gpu_hours: float
    wall_hours: float
    on_demand_usd: float
    spot_usd: float | None
    price_date: str
    source: str


# torch.cuda.get_device_name() fragment → the catalog's gpu_model; the first contained fragment wins.
DEVICE_MODELS = (("H200", "H200"), ("H100", "H100"), ("A100-SXM4-80GB", "A100-80GB"), ("A100 80GB", "A100-80GB"),
                 ("A100", "A100-40GB"), ("L40S", "L40S"), ("A10G", "A10G"), ("L4", "L4"))
# A catalog GPU with no measurement of its own may use one of the same chip, saying so.
SAME_CHIP = {"H100": ("H200", "same SMs and clocks, 0.70x the memory bandwidth: optimistic by up to ~15%")}


def gpu_model(device_name: str) -> str | None:
    return next((model for fragment, model in DEVICE_MODELS if fragment in device_name), None)


def measured(stage: int, path: Path = RESULTS, *, resolution: int | None = None,
             batch_size: int | None = None) -> dict[str, tuple[float, str]]:
    """GPU model → (samples/s/GPU, where from) for this stage, from bench_step's rows."""
    if not path.is_file():
        return {}
    try:
        rows = json.loads(path.read_text())["results"]
        best: dict[str, dict] = {}
        for r in rows:
            if not (r.get("bench") == "step" and r.get("stage") == stage and r.get("preset") == "paper"
                    and r.get("config") == "ours" and "samples_per_s_per_gpu" in r):
                continue
            if resolution is not None and r.get("resolution") != resolution:
                continue
            model = gpu_model(str(r.get("device", "")))
            if model is None:
                continue
            key = (r.get("batch_size") == batch_size, str(r.get("date", "")))
            if model not in best or key >= (best[model]["_key"]):
                best[model] = {**r, "_key": key}
        out = {m: (float(r["samples_per_s_per_gpu"]),
                   f"measured on {r['device']}, batch {r.get('batch_size')} ({r.get('date', '?')})")
               for m, r in best.items()}
    except (ValueError, KeyError, TypeError, AttributeError):
        raise CatalogError(f"{path}: expected {{\"results\": [{{\"bench\": \"step\", \"stage\", \"device\", "
                           f"\"samples_per_s_per_gpu\", …}}, …]}} as benchmarks/bench_step.py writes") from None
    for model, (donor, why) in SAME_CHIP.items():
        if model not in out and donor in out:
            out[model] = (out[donor][0], f"{out[donor][1]}; {model}: {why}")
    return out


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
    got = measured(cfg.stage, results, resolution=cfg.data.resolution, batch_size=cfg.data.batch_size)
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
            return got[p.gpu_model]
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
