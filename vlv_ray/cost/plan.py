"""`vlv-ray cost plan`: rank (cloud, region, instance type, market) by the jobs' total dollars.

Every row is `model.quote()` for each job on that market, summed; rows where any job cannot
run (no price, no throughput figure or estimate, micro-batch does not fit) are left out and
counted by reason. `write_cluster()` renders the chosen row into a Ray cluster-launcher YAML
from the committed template of its cloud (cluster/aws-spot.yaml, cluster/gcp-spot.yaml).
"""
from __future__ import annotations

import copy
import datetime
import importlib.util
import json
import math
import re
from collections import Counter
from pathlib import Path

import yaml

from vlv_ray.config import JobConfig
from vlv_ray.cost import hardware, model
from vlv_ray.cost.catalog import MARKETS, Catalog, CatalogError

TEMPLATES = Path(__file__).resolve().parents[2] / "cluster"
TOP = 10


class PlanError(CatalogError):
    """A plan that has no answer: the message says which input rules every row out."""


def plan(cfgs: list[tuple[str, JobConfig]], cat: Catalog, *, clouds: list[str] | None = None,
         max_gpus: int | None = None, budget: float | None = None, target: float | None = None,
         results: Path = model.RESULTS) -> dict:
    known = sorted({p.cloud for p in cat.rows})
    for c in clouds or []:
        if c not in known:
            raise PlanError(f"clouds: {c!r} is not a cloud of the price snapshot (known: {', '.join(known)})")
    got = {path: model.measured_job(cfg, results) for path, cfg in cfgs}
    gpus = [p for p in cat.gpu_rows() if not clouds or p.cloud in clouds]
    for path, cfg in cfgs:
        if why := model.fits_no_gpu(cfg, gpus, got[path]):
            raise PlanError(f"{path}: {why}")
    rows, dropped = [], Counter()
    for p in gpus:
        for market in MARKETS:
            quotes = []
            for path, cfg in cfgs:
                workers = min(cfg.scaling.num_workers, max_gpus) if max_gpus else None
                q = model.quote(cfg, p, market, cat, got[path], workers=workers)
                if isinstance(q, str):
                    dropped[re.sub(r" in [a-z0-9-]+:", ":", q)] += 1
                    break
                quotes.append(q)
            else:
                rows.append({"cloud": p.cloud, "region": p.region, "instance_type": p.instance_type,
                             "gpu_model": p.gpu_model, "market": market,
                             "total_usd": sum(q.total_usd for q in quotes),
                             "estimated": any(q.estimated for q in quotes), "jobs": [q.to_json() for q in quotes]})
    if not rows:
        raise PlanError("no (cloud, region, instance type, market) can run these jobs: "
                        + "; ".join(f"{n}× {why}" for why, n in dropped.most_common(3)))
    rows.sort(key=lambda r: r["total_usd"])
    if budget is not None:
        within = [r for r in rows if r["total_usd"] <= budget]
        if not within:
            r = rows[0]
            raise PlanError(f"budget: ${budget:,.2f} is below every row (cheapest: ${r['total_usd']:,.0f} on "
                            f"{r['cloud']} {r['region']} {r['instance_type']} {r['market']})")
        rows = within
    projections = []
    if target is not None:  # the cheapest row, and the cheapest whose throughput is all measured
        measured_rows = [r for r in rows if not r["estimated"]]
        for r in ([rows[0]] + ([measured_rows[0]] if measured_rows and measured_rows[0] is not rows[0] else [])):
            projections.append(project(cfgs, cat, r, target, got, max_gpus))
    return {"jobs": [path for path, _ in cfgs], "rows": rows[:TOP], "candidates": len(rows),
            "projections": projections,
            "dropped": [{"reason": why, "rows": n} for why, n in dropped.most_common()],
            "snapshot": cat.meta, "assumptions": assumptions(cfgs, got)}


def project(cfgs, cat: Catalog, row: dict, target: float, got: dict, max_gpus: int | None) -> dict:
    """The throughput speed-up (same on every job) that brings a row's total to `target` dollars.

    A projection, not a measurement: all-reduce, reclaim restarts, head and storage keep
    their model costs; only samples/s per GPU scales. MFU = FLOPs/sample × samples/s ÷ the
    GPU's dense bf16 peak (hardware.py), with the FLOPs/sample bench_step.py counted."""
    p = next(x for x in cat.rows if (x.cloud, x.region, x.instance_type) == (row["cloud"], row["region"],
                                                                             row["instance_type"]))

    def quotes(k: float) -> list:
        return [model.quote(cfg, p, row["market"], cat, got[path], speedup=k,
                            workers=min(cfg.scaling.num_workers, max_gpus) if max_gpus else None) for path, cfg in cfgs]

    def total(k: float) -> float:
        qs = quotes(k)
        return math.inf if any(isinstance(q, str) for q in qs) else sum(q.total_usd for q in qs)
    lo, hi = 1.0, 1.0
    while total(hi) > target and hi < 1e3:
        lo, hi = hi, hi * 2
    if total(hi) > target:
        return {"target_usd": target, "row": _where(row), "speedup": None, "jobs": []}
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if total(mid) <= target else (mid, hi)
    jobs = []
    for (path, _), q in zip(cfgs, quotes(hi)):
        flops = next((r.get("flops_per_sample") for _, _, r in got[path].throughput.values()
                      if r.get("flops_per_sample")), None)
        peak = getattr(hardware.GPUS.get(q.gpu_model), "bf16_tflops", None)
        jobs.append({"job": q.job, "samples_per_s_per_gpu": q.samples_per_s_per_gpu,
                     "mfu": flops * q.samples_per_s_per_gpu / (peak * 1e12) if flops and peak else None,
                     "total_usd": q.total_usd})
    return {"target_usd": target, "row": _where(row), "speedup": hi, "jobs": jobs}


def _where(row: dict) -> str:
    return f"{row['cloud']} {row['region']} {row['instance_type']} {row['market']}"


def assumptions(cfgs: list[tuple[str, JobConfig]], got: dict[str, model.Measured]) -> list[str]:
    c = cfgs[0][1].cost
    stages = {cfg.stage: got[path] for path, cfg in cfgs}
    return [
        f"throughput: measured where that GPU was measured; else *estimated* by peak/bandwidth ratios on the "
        f"H200 profile (FLOP-bound share of busy time {model.PROFILE[1]['flop_share']:.0%} stage 1, "
        f"{model.PROFILE[2]['flop_share']:.0%} stage 2; host-idle time unchanged)",
        f"memory: micro-batch must fit {model.USABLE_MEMORY:.0%} of GPU memory; peak = fixed + per-sample × batch "
        f"from the measured peaks; recompute keeps {model.RECOMPUTE_KEEPS:.2f} of activations for "
        f"+{model.RECOMPUTE_COST:.2f} of the FLOP-bound time",
        *(f"memory, {model.memory_basis(stage, m)}" for stage, m in sorted(stages.items())),
        f"communication: bf16 gradient all-reduce of {model.TRAINABLE_PARAMS[1] / 1e9:g}B (stage 1) / "
        f"{model.TRAINABLE_PARAMS[2] / 1e9:g}B (stage 2) parameters per optimizer step, not overlapped",
        f"spot: {c.spot_price} of the region's zone prices; {c.spot_preemptions_per_node_hour:g} reclaims per "
        f"node-hour, each losing half a checkpoint interval + {c.restart_s:g} s (cost.spot_* / cost.restart_s)",
        f"head: the region's smallest listed CPU type, on-demand; storage: {c.storage_gb:g} GB × "
        f"${c.storage_usd_per_gb_month:g}/GB-month (cost.storage_gb, cost.storage_usd_per_gb_month)",
    ]


def format_plan(out: dict) -> str:
    lines = [f"cost plan for {' + '.join(out['jobs'])}: top {len(out['rows'])} of {out['candidates']} markets "
             f"(* = throughput estimated, not measured)",
             f"  {'#':>2} {'cloud':<5} {'region':<22} {'instance':<18} {'market':<9} {'$/node-h':>8} "
             f"{'nodes':>5} {'wall h':>7} {'total $':>9}"]
    for i, r in enumerate(out["rows"], 1):
        j0 = r["jobs"][0]
        market = r["market"] + (f"/{j0['spot_price']}" if r["market"] == "spot" else "")
        lines.append(f"  {i:>2} {r['cloud']:<5} {r['region']:<22} {r['instance_type']:<18} {market:<9} "
                     f"{j0['usd_per_node_hour']:>8.3f} {j0['nodes']:>5} "
                     f"{sum(j['wall_hours'] for j in r['jobs']):>7.1f} "
                     f"{r['total_usd']:>9,.0f}{' *' if r['estimated'] else ''}")
        for j in r["jobs"]:
            lines.append(f"       {j['job']}: {j['samples']:,} samples at {j['samples_per_s_per_gpu']:.1f} smp/s/GPU "
                         f"({'*estimated* ' if j['estimated'] else ''}{j['throughput_from']}) × {j['workers']} GPUs"
                         f"{' with ' + ', '.join(j['settings']) if j['settings'] else ''}; all-reduce "
                         f"{j['comm_s_per_step']:.2f} s/step ({j['comm_from']}); {j['preemptions']:.1f} reclaims "
                         f"(+{j['preemption_hours']:.1f} h); GPUs ${j['gpu_usd']:,.0f} + head {j['head']} "
                         f"${j['head_usd']:,.0f} + storage ${j['storage_usd']:,.0f} = ${j['total_usd']:,.0f}")
    if out["dropped"]:
        lines.append("  left out: " + "; ".join(f"{d['rows']}× {d['reason']}" for d in out["dropped"][:6]))
    for pr in out.get("projections", []):
        if pr["speedup"] is None:
            lines.append(f"  projection (not a measurement): no speed-up up to 1000x brings {pr['row']} to "
                         f"${pr['target_usd']:,.0f}")
            continue
        jobs = "; ".join(f"{j['job']} {j['samples_per_s_per_gpu']:.1f} smp/s/GPU"
                         + (f" (MFU {j['mfu']:.0%})" if j["mfu"] is not None else "") for j in pr["jobs"])
        lines.append(f"  projection (not a measurement): ${pr['target_usd']:,.0f} on {pr['row']} needs "
                     f"{pr['speedup']:.2f}x today's throughput: {jobs}")
    lines += [f"  assumption: {a}" for a in out["assumptions"]]
    return "\n".join(lines)


# ---------------------------------------------------------------------------- the cluster file


def write_cluster(row: dict, cat: Catalog, path: Path) -> dict:
    """The launcher YAML for a plan row, from its cloud's template; returns the config written."""
    tpl = TEMPLATES / f"{row['cloud']}-spot.yaml"
    if not tpl.is_file():
        raise PlanError(f"write-cluster: no template for cloud {row['cloud']!r} ({tpl.name})")
    cfg = yaml.safe_load(tpl.read_text())
    p = next(x for x in cat.rows if (x.cloud, x.region, x.instance_type) ==
             (row["cloud"], row["region"], row["instance_type"]))
    head = cat.head(p.cloud, p.region)
    if head is None:
        raise PlanError(f"write-cluster: no CPU head type listed in {p.cloud} {p.region}")
    nodes, spot = row["jobs"][0]["nodes"], row["market"] == "spot"
    types = cfg["available_node_types"]
    head_name = cfg["head_node_type"]
    worker_tpl = copy.deepcopy(next(v for k, v in types.items() if k != head_name))
    key = "InstanceType" if p.cloud == "aws" else "machineType"
    types[head_name]["node_config"][key] = head.instance_type
    types[head_name]["labels"]["vlv-ray/instance-type"] = head.instance_type
    name = f"gpu_{p.gpu_model.lower().replace('-', '_')}_x{p.gpus}_{'spot' if spot else 'ondemand'}"
    worker = worker_tpl
    worker.update(min_workers=0, max_workers=nodes)
    worker["node_config"][key] = p.instance_type
    if p.cloud == "aws":
        worker["node_config"].pop("InstanceMarketOptions", None)
        if spot:
            worker["node_config"]["InstanceMarketOptions"] = {"MarketType": "spot"}
        cfg["provider"]["region"] = p.region
    else:
        if not spot:
            worker["node_config"].pop("scheduling", None)
            worker["node_config"]["scheduling"] = {"onHostMaintenance": "TERMINATE"}
        cfg["provider"].update(region=p.region, availability_zone=p.cheapest_zone or f"{p.region}-a")
    worker["resources"] = {"CPU": p.vcpus, "GPU": p.gpus, f"accelerator_type:{p.gpu_model}": p.gpus}
    # vlv-ray/region: the live ledger (meter.py) prices each node at this region's row.
    worker["labels"] = {"vlv-ray/instance-type": p.instance_type, "vlv-ray/market": row["market"],
                        "vlv-ray/node-type": name, "vlv-ray/region": p.region}
    types[head_name]["labels"]["vlv-ray/region"] = p.region
    cfg["available_node_types"] = {head_name: types[head_name], name: worker}
    cfg["max_workers"] = nodes
    requires = next((line + "\n" for line in tpl.read_text().splitlines() if line.startswith("# requires:")), "")
    header = requires + (f"# Written by `vlv-ray cost plan --write-cluster` on {datetime.date.today()} for "
              f"{p.cloud} {p.region} {p.instance_type} {row['market']} (${row['total_usd']:,.0f} for "
              f"{', '.join(j['job'] for j in row['jobs'])}),\n# from {tpl.relative_to(TEMPLATES.parent)}; "
              f"fill ${{VLV_*}} with cluster/render, as for the template.\n")
    path.write_text(header + yaml.safe_dump(cfg, sort_keys=False, width=120))
    return cfg


def validate(cfg: dict) -> None:
    """Against the JSON schema shipped inside the installed `ray` (found without importing ray)."""
    spec = importlib.util.find_spec("ray")
    if spec is None or spec.origin is None:
        return
    import jsonschema

    schema = json.loads((Path(spec.origin).parent / "autoscaler" / "ray-schema.json").read_text())
    try:
        jsonschema.validate(cfg, schema)
    except jsonschema.ValidationError as e:
        raise PlanError(f"write-cluster: the rendered file fails Ray's schema: {e.message}") from None
