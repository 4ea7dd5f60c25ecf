"""The one cost model: what a job costs on (cloud, region, instance type, market).

`cost estimate`, `cost plan` (and `sweep`, `launch`, the budget guard's projection) call
`quote()`. For a job of S samples on W GPUs of one instance type:

1. Throughput per GPU: measured samples/s for that GPU model where benchmarks/results.json
   has it (end-to-end `"bench": "train"` rows first, then `bench_step.py`'s `"step"` rows);
   elsewhere *estimated* from the measured GPU (`scale()`): its profiled step time splits
   into host-idle time (kept as is), FLOP-bound kernels (matmul/conv/attention: 53% of busy
   time in stage 1, 42% in stage 2, benchmarks/RESULTS.md) scaled by the bf16 peak ratio,
   and bandwidth-bound kernels scaled by the memory-bandwidth ratio (hardware.py).
2. Memory: peak = fixed + per-sample × micro-batch, anchored on the measured peaks (`fit()`).
   A micro-batch that does not fit 95% of the GPU's memory tries activation recompute;
   otherwise the configuration is dropped, with the reason.
3. Communication: one all-reduce of the trainable parameters' bf16 gradients per optimizer
   step (ring: 2(n-1)/n of the bytes), not overlapped with compute; inside a node over
   NVLink/PCIe, across nodes over the instance network.
4. Spot preemption: each node is reclaimed `cost.spot_preemptions_per_node_hour` times an
   hour (an assumption the job can override); each reclaim loses the work since the last
   checkpoint (half an interval on average) plus `cost.restart_s`, for the whole cluster.
5. Dollars: whole nodes × the catalog's hourly price (`hourly()`: spot at the job's
   `cost.spot_price` statistic, the same figure the live ledger meters nodes at) × wall time,
   + the CPU head (on-demand, same region) × wall time, + storage (`cost.storage_gb` × $/GB-month).
   Every term is proportional to wall time, so a quote is also a price per step
   (`Quote.usd_per_step`), and `projected_usd()` is the one projection: the budget guard runs
   it on a live run's measured $/step, and on the model's own before the first step
   (`quote_job()`: the job's `cost.instance_type` in `cost.market`, as `cost estimate` prices it).
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from vlv_ray.config import JobConfig
from vlv_ray.cost import catalog as catalog_mod, hardware
from vlv_ray.cost.catalog import Catalog, CatalogError, Price
from vlv_ray.config import CostConfig

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results.json"
# Share of GPU busy time in FLOP-bound kernels, and the GPU's busy share of the step
# (benchmarks/RESULTS.md, "Where the time goes", H200, 2026-11-26).
PROFILE = {1: {"flop_share": 0.53, "busy": 0.875}, 2: {"flop_share": 0.42, "busy": 0.764}}
# Trainable parameters whose gradients are all-reduced each optimizer step
# (`vlv-ray config show jobs/stage{1,2}-paper.yaml --params`).
TRAINABLE_PARAMS = {1: 0.410e9, 2: 3.502e9}  # 409,558,016 and 3,501,792,256 (2026-12-01)
USABLE_MEMORY = 0.95  # of the GPU's memory: allocator fragmentation and CUDA context
RECOMPUTE_KEEPS = 1 / 3  # activation recompute keeps ~1/3 of the per-sample memory …
RECOMPUTE_COST = 1 / 3  # … and re-runs one forward: +1/3 of the FLOP-bound time (assumption)
DEVICE_MODELS = (("H200", "H200"), ("H100", "H100"), ("A100-SXM4-80GB", "A100-80GB"), ("A100 80GB", "A100-80GB"),
                 ("A100", "A100-40GB"), ("L40S", "L40S"), ("A10G", "A10G"), ("L4", "L4"), ("B200", "B200"))


def gpu_model(device_name: str) -> str | None:
    return next((model for fragment, model in DEVICE_MODELS if fragment in device_name), None)


@dataclass
class Measured:
    """What benchmarks/results.json says about one stage."""
    throughput: dict[str, tuple[float, str, dict]] = field(default_factory=dict)  # GPU model → (smp/s, where, row)
    memory: list[tuple[int, float]] = field(default_factory=list)  # (micro-batch, peak GiB) on the anchor GPU


def measured(stage: int, path: Path = RESULTS, *, resolution: int | None = None,
             batch_size: int | None = None) -> Measured:
    """Per GPU model, the best measured row for this stage: "train" before "step", the job's batch first, newest."""
    out = Measured()
    if not path.is_file():
        return out
    try:
        best: dict[str, tuple] = {}
        for r in json.loads(path.read_text())["results"]:
            if not (r.get("bench") in ("train", "step") and r.get("stage") == stage and r.get("preset") == "paper"
                    and r.get("config") == "ours" and "samples_per_s_per_gpu" in r):
                continue
            if resolution is not None and r.get("resolution") != resolution:
                continue
            model = gpu_model(str(r.get("device", "")))
            if model is None:
                continue
            sps = float(r["samples_per_s_per_gpu"])
            if r.get("peak_mem_gb") is not None and r.get("bench") == "step":
                out.memory.append((int(r["batch_size"]), float(r["peak_mem_gb"])))
            key = (r["bench"] == "train", r.get("batch_size") == batch_size, str(r.get("date", "")))
            if model not in best or key >= best[model][0]:
                best[model] = (key, sps, r)
        for model, (_, sps, r) in best.items():
            where = f"measured ({r['bench']}) on {r['device']}, batch {r.get('batch_size')} ({r.get('date', '?')})"
            out.throughput[model] = (sps, where, r)
    except (ValueError, KeyError, TypeError, AttributeError):
        raise CatalogError(f"{path}: expected {{\"results\": [{{\"bench\": \"step\", \"stage\", \"device\", "
                           f"\"samples_per_s_per_gpu\", …}}, …]}} as benchmarks/bench_step.py writes") from None
    out.memory = sorted(set(out.memory))
    return out


def measured_job(cfg: JobConfig, path: Path = RESULTS) -> Measured:
    """`measured()` for this job's stage, resolution and micro-batch."""
    return measured(cfg.stage, path, resolution=cfg.data.resolution, batch_size=cfg.data.batch_size)


def scale(stage: int, anchor: str, target: str) -> float:
    """Step-time ratio target/anchor from the profile split (>1: slower)."""
    a, t, p = hardware.GPUS[anchor], hardware.GPUS[target], PROFILE[stage]
    busy = p["flop_share"] * a.bf16_tflops / t.bf16_tflops + (1 - p["flop_share"]) * a.bandwidth_gbs / t.bandwidth_gbs
    return (1 - p["busy"]) + p["busy"] * busy


def throughput(stage: int, model: str, got: Measured) -> tuple[float, str, bool] | str:
    """(samples/s/GPU, where from, estimated?) or the reason there is none."""
    if model in got.throughput:
        sps, where, _ = got.throughput[model]
        return sps, where, False
    if model not in hardware.GPUS:
        return f"{model}: {hardware.NO_SPEC.get(model, 'no datasheet figures in vlv_ray/cost/hardware.py')}"
    anchors = [m for m in got.throughput if m in hardware.GPUS]
    if not anchors:
        return f"no measured throughput for stage {stage} to scale from"
    anchor = max(anchors, key=lambda m: hardware.GPUS[m].bf16_tflops)
    sps = got.throughput[anchor][0] / scale(stage, anchor, model)
    return sps, f"from {anchor}'s measured {got.throughput[anchor][0]:g} smp/s by peak and bandwidth", True


def fit(cfg: JobConfig, gpu_memory_gib: float, got: Measured) -> tuple[list[str], float] | str:
    """(settings needed, throughput factor) for the job's micro-batch on this GPU, or why it does not fit.

    Two or more measured batch sizes give fixed + per-sample memory; with one, the whole measured
    peak is fixed below that batch and scales linearly above it (an upper bound)."""
    b, usable = cfg.data.batch_size, USABLE_MEMORY * gpu_memory_gib
    if not got.memory:
        return [], 1.0  # nothing measured: nothing to say
    if len(got.memory) >= 2:
        (b0, m0), (b1, m1) = got.memory[0], got.memory[-1]
        per = (m1 - m0) / (b1 - b0)
        fixed = m0 - per * b0
    else:
        (b0, m0), = got.memory
        fixed, per = (m0, 0.0) if b <= b0 else (0.0, m0 / b0)
    need = fixed + per * b
    if need <= usable:
        return [], 1.0
    if per > 0 and fixed + per * b * RECOMPUTE_KEEPS <= usable:
        module = "unet" if cfg.stage == 1 else "llm"
        return [f"model.gradient_checkpointing=[{module}]"], 1 / (1 + RECOMPUTE_COST * PROFILE[cfg.stage]["flop_share"])
    one = ", from one measured peak: an upper bound" if len(got.memory) == 1 else ""
    return (f"micro-batch {b} needs ≈{need:.0f} GiB (model: {fixed:.1f} + {per:.2f}/sample{one}), "
            f"{usable:.0f} usable")


def memory_basis(stage: int, got: Measured) -> str:
    """What `fit()` knows of this stage's memory, in words: every output that drops a row says it."""
    pts = ", ".join(f"{m:g} GB at batch {b}" for b, m in got.memory)
    if not got.memory:
        return f"stage {stage}: no measured peak memory, so no micro-batch is ruled out"
    if len(got.memory) == 1:
        return (f"stage {stage}: one measured peak ({pts}): an upper bound, all of it fixed at or below that batch "
                "and proportional above it; a second batch size measured on the GPU would split fixed from "
                "per-sample memory")
    return f"stage {stage}: peaks measured at {pts}: fixed + per-sample memory from the two ends"


def fits_no_gpu(cfg: JobConfig, gpus: list[Price], got: Measured) -> str | None:
    """Why the job's micro-batch fits none of these GPUs (even with recompute), or None if one fits.

    The job's error, not a row count: `cost plan` and `cost estimate` both raise it."""
    sizes = sorted({(p.gpu_memory_gib, p.gpu_model) for p in gpus}, reverse=True)
    if not sizes or not all(isinstance(fit(cfg, mem, got), str) for mem, _ in sizes):
        return None
    mem, gpu = sizes[0]
    return (f"data.batch_size: {fit(cfg, mem, got)} on the largest listed GPU ({gpu}, {mem:g} GiB), "
            "so it fits none; lower data.batch_size")


def hourly(p: Price, market: str, cost: CostConfig) -> float | None:
    """$/node-hour of `p` in `market`: spot at the `cost.spot_price` statistic of the region's zone
    prices (on-demand where no spot price is listed). Quotes and the live ledger both price with it."""
    return p.usd_per_hour(market, cost.spot_price)


def storage_hourly(cost: CostConfig) -> float:
    """$/hour of the run's object storage (`cost.storage_gb` × $/GB-month over a 730-hour month).
    Quotes add it over the wall time; the live ledger meters it while a run on object storage lives."""
    return cost.storage_gb * cost.storage_usd_per_gb_month / 730.0


def projected_usd(spent: float, step: int, max_steps: int, usd_per_step: float) -> float:
    """A run's total: what it has spent + the steps left × dollars per step (a quote: spent 0, step 0)."""
    return spent + max(0, max_steps - step) * usd_per_step


@dataclass
class Quote:
    job: str
    cloud: str
    region: str
    instance_type: str
    gpu_model: str
    market: str
    spot_price: str  # which spot statistic priced it ("" on-demand)
    usd_per_node_hour: float
    gpus_per_node: int
    nodes: int
    workers: int
    samples: int
    samples_per_s_per_gpu: float
    throughput_from: str
    estimated: bool
    settings: list[str]
    comm_s_per_step: float
    comm_from: str
    preemptions: float
    preemption_hours: float
    wall_hours: float
    gpu_hours: float
    gpu_usd: float
    head: str
    head_usd: float
    storage_usd: float
    total_usd: float
    steps: int
    usd_per_step: float  # total ÷ steps: every term is proportional to wall time

    def to_json(self) -> dict:
        return asdict(self)


def _comm(cfg: JobConfig, p: Price, nodes: int, workers: int) -> tuple[float, str]:
    if workers <= 1:
        return 0.0, "one GPU: no all-reduce"
    gbytes = 2 * TRAINABLE_PARAMS[cfg.stage] / 1e9 * 2 * (workers - 1) / workers
    if nodes == 1:
        spec = hardware.GPUS.get(p.gpu_model)
        gbs, link = (spec.link_gbs, spec.link) if spec else (16.0, "PCIe (assumed 16 GB/s)")
        return gbytes / gbs, f"{gbytes:.1f} GB over {link}"
    net = hardware.network_gbps(p.instance_type)
    gbps = net[0] if net else cfg.cost.network_gbps_if_unknown
    where = net[1] if net else f"network unknown: {gbps:g} Gbit/s assumed (cost.network_gbps_if_unknown)"
    return gbytes * 8 / gbps, f"{gbytes:.1f} GB over {where}"


def quote(cfg: JobConfig, p: Price, market: str, cat: Catalog, got: Measured, *,
          workers: int | None = None, speedup: float = 1.0) -> Quote | str:
    """The job's cost on one (cloud, region, instance type, market), or why it cannot run there."""
    c = cfg.cost
    node_usd_h = hourly(p, market, c)
    if node_usd_h is None:
        return f"{p.instance_type} in {p.region}: no {market} price listed"
    if market == "spot" and p.spot_usd_per_hour is None:
        return f"{p.instance_type} in {p.region}: no spot price listed"
    rate = throughput(cfg.stage, p.gpu_model, got)
    if isinstance(rate, str):
        return rate
    sps, origin, estimated = rate
    mem = p.gpu_memory_gib or getattr(hardware.GPUS.get(p.gpu_model), "memory_gb", 0)
    ran = not estimated and got.throughput[p.gpu_model][2].get("batch_size") == cfg.data.batch_size
    fits = ([], 1.0) if ran else fit(cfg, mem, got)  # measured at this micro-batch on this GPU: it fits
    if isinstance(fits, str):
        return f"{p.gpu_model} ({mem:g} GiB): {fits}"
    settings, factor = fits
    sps *= factor * speedup
    workers = workers or cfg.scaling.num_workers
    nodes = math.ceil(workers / p.gpus)
    samples = cfg.max_steps * cfg.global_batch_size
    comm_s, comm_from = _comm(cfg, p, nodes, workers)
    compute_h = (samples / (sps * workers) + cfg.max_steps * comm_s) / 3600
    preemptions, lost_h = 0.0, 0.0
    if market == "spot" and c.spot_preemptions_per_node_hour > 0:
        step_s = compute_h * 3600 / cfg.max_steps
        loss_h = (cfg.checkpoint.every_steps * step_s / 2 + c.restart_s) / 3600
        rate_h = c.spot_preemptions_per_node_hour * nodes
        if rate_h * loss_h >= 1:
            return f"{p.instance_type}: {rate_h:g} reclaims/h × {loss_h:.2f} h lost each: the run never finishes"
        wall = compute_h / (1 - rate_h * loss_h)
        preemptions, lost_h = rate_h * wall, wall - compute_h
    else:
        wall = compute_h
    head, head_note = cat.head(p.cloud, p.region), ""
    if head is None:  # none listed in this region: the cloud's cheapest listed head, and say so
        heads = [h for h in cat.rows if h.cloud == p.cloud and h.gpus == 0 and h.on_demand_usd_per_hour is not None]
        head = min(heads, key=lambda h: (h.vcpus, h.on_demand_usd_per_hour), default=None)
        head_note = f" (none listed in {p.region}: {head.region}'s price)" if head else ""
    head_usd = wall * head.on_demand_usd_per_hour if head else 0.0
    storage_usd = storage_hourly(c) * wall
    gpu_usd = nodes * node_usd_h * wall
    total = gpu_usd + head_usd + storage_usd
    return Quote(cfg.name, p.cloud, p.region, p.instance_type, p.gpu_model, market,
                 c.spot_price if market == "spot" else "", node_usd_h, p.gpus, nodes, workers, samples, sps, origin,
                 estimated, settings, comm_s, comm_from, preemptions, lost_h, wall, nodes * p.gpus * wall, gpu_usd,
                 f"{head.instance_type} ${head.on_demand_usd_per_hour:g}/h{head_note}" if head else "none listed",
                 head_usd, storage_usd, total, cfg.max_steps, total / cfg.max_steps)


def quote_job(cfg: JobConfig, *, results: Path = RESULTS, cat: Catalog | None = None) -> Quote | str:
    """The job's own instance (`cost.instance_type` in `cost.region`, `cost.market`), as `cost estimate`
    prices it; or why there is no quote (no instance named, not in the catalog, no throughput …)."""
    c = cfg.cost
    if not c.instance_type:
        return "cost.instance_type: not set (the model prices a named instance type)"
    cat = cat or catalog_mod.load(c.prices_csv)
    p = cat.lookup(c.instance_type, c.region)
    if p is None:
        return f"cost.instance_type: {c.instance_type!r} is not in the price catalog"
    return quote(cfg, p, c.market, cat, measured_job(cfg, results))
