"""`vlv-ray cost estimate | report | prices | plan`: what a job will cost, what a run has cost,
the price snapshot, the cheapest market for a set of jobs (vlv_ray/cost)."""
from __future__ import annotations

import json
from pathlib import Path

from vlv_ray.cli.common import UserError, command_group, in_flags, job_args, storage_args, storage_kw


def add_parsers(sub) -> None:
    cosub = command_group(sub, "cost", help="estimate, plan or report a job's cost; show the price snapshot")
    add_estimate_parser(cosub)
    add_report_parser(cosub)
    add_prices_parser(cosub)
    add_plan_parser(cosub)


def add_estimate_parser(cosub) -> None:
    est = cosub.add_parser("estimate", help="GPU-hours, wall time, on-demand and spot dollars of JOB.yaml")
    job_args(est)
    est.add_argument("--throughput", type=float, default=None,
                     help="samples/s per GPU (default: measured figures in benchmarks/results.json)")
    est.add_argument("--instance", default=None, help="instance type to price (default: cost.instance_type, "
                     "else the cheapest)")
    est.add_argument("--prices", default=None, help="a CSV extending/overriding the price catalog")
    est.add_argument("--results", default=None, help="benchmark results JSON (default: benchmarks/results.json)")
    est.add_argument("--json", action="store_true")
    est.set_defaults(fn=cmd_cost_estimate)


def cmd_cost_estimate(args) -> int:
    from vlv_ray.config import load_job
    from vlv_ray.cost import catalog, estimate

    cfg = load_job(args.job, args.overrides)
    if args.throughput is not None and args.throughput <= 0:
        raise UserError(f"--throughput: got {args.throughput}, expected samples/s per GPU > 0")
    cat = catalog.load(args.prices or cfg.cost.prices_csv)
    with in_flags(throughput="--throughput", instance="--instance", prices_csv="--prices"):
        e = estimate.estimate(cfg, cat, throughput=args.throughput, instance=args.instance, source=args.job,
                              **({"results": Path(args.results)} if args.results else {}))
    print(json.dumps(e, indent=1) if args.json else estimate.format_estimate(e))
    return 0


def add_report_parser(cosub) -> None:
    rep = cosub.add_parser("report", help="a run's cost ledger: node type, market, node-hours, dollars")
    rep.add_argument("run_uri", help="the run directory: <storage_path>/<name>")
    rep.add_argument("--json", action="store_true")
    storage_args(rep)
    rep.set_defaults(fn=cmd_cost_report)


def cmd_cost_report(args) -> int:
    from vlv_ray import storage
    from vlv_ray.cost.ledger import Ledger, format_report, ledger_uri

    kw = storage_kw(args)
    if not storage.exists(ledger_uri(args.run_uri), **kw):
        raise UserError(f"{args.run_uri}: no cost ledger at {ledger_uri(args.run_uri)} (a run directory: "
                        "<storage_path>/<name>)")
    led = Ledger.load(args.run_uri, args.run_uri, **kw)
    print(json.dumps(led.to_json(), indent=1) if args.json else format_report(led))
    return 0


def add_prices_parser(cosub) -> None:
    pri = cosub.add_parser("prices", help="the price snapshot in use (source, commit, date, regions); "
                           "--from reads SkyPilot vms.csv downloads or user rows")
    pri.add_argument("--from", dest="sources", action="append", metavar="CATALOG.csv",
                     help="a SkyPilot-format vms.csv or a user prices CSV; extends the snapshot (repeatable)")
    pri.add_argument("--replace", action="store_true", help="a --from file's clouds replace the snapshot's rows")
    pri.add_argument("--source", action="append", metavar="CLOUD:repo=R,path=P,commit=C,date=D",
                     help="record where a cloud's rows came from (written with --save)")
    pri.add_argument("--save", action="store_true", help="write the result as the new snapshot (vlv_ray/cost/snapshot.csv)")
    pri.add_argument("--json", action="store_true")
    pri.set_defaults(fn=cmd_cost_prices)


def cmd_cost_prices(args) -> int:
    from vlv_ray.cost import catalog, hardware

    cat = catalog.load(args.sources or None, replace_clouds=args.replace)
    for spec in args.source or []:
        cloud, _, pairs = spec.partition(":")
        try:
            catalog.with_source(cat, cloud, **dict(kv.split("=", 1) for kv in pairs.split(",") if kv))
        except ValueError:
            raise UserError(f"--source: got {spec!r}, expected CLOUD:repo=R,path=P,commit=C,date=YYYY-MM-DD") from None
    if args.save:
        catalog.write_snapshot(cat.rows, cat.meta, catalog.SNAPSHOT)
    summary = {}
    for cloud in sorted({p.cloud for p in cat.rows} | set(cat.meta)):
        rows = [p for p in cat.rows if p.cloud == cloud]
        shapes = {p.instance_type: {"gpu_model": p.gpu_model, "gpus": p.gpus, "gpu_memory_gib": p.gpu_memory_gib,
                                    "vcpus": p.vcpus, "memory_gib": p.memory_gib,
                                    "network": (hardware.network_gbps(p.instance_type) or (None, "unknown"))[1]}
                  for p in rows}
        summary[cloud] = {**cat.meta.get(cloud, {"repo": "(user rows)"}), "regions": sorted({p.region for p in rows}),
                          "instance_types": sorted(shapes), "instances": shapes, "rows": len(rows)}
    if args.json:
        print(json.dumps({"snapshot": str(catalog.SNAPSHOT), "saved": args.save, "clouds": summary}, indent=1))
        return 0
    print(f"price snapshot {catalog.SNAPSHOT}{' (saved)' if args.save else ''}"
          f"{' + ' + ', '.join(args.sources) if args.sources else ''}")
    for cloud, s in summary.items():
        print(f"  {cloud}: {s.get('repo', '?')} {s.get('path', '')} @ {s.get('commit', '?')[:12]} "
              f"({s.get('date', '?')}): "
              f"{s['rows']} rows, {len(s['instance_types'])} instance types, {len(s['regions'])} regions")
        print(f"    regions: {', '.join(s['regions'])}")
    return 0


def add_plan_parser(cosub) -> None:
    pla = cosub.add_parser("plan", help="rank (cloud, region, instance type, market) by the jobs' total dollars")
    pla.add_argument("jobs", nargs="+", metavar="JOB.yaml")
    pla.add_argument("--budget", type=float, default=None, metavar="USD", help="only rows at or under this total")
    pla.add_argument("--clouds", default=None, help="comma-separated clouds to consider (default: all in the snapshot)")
    pla.add_argument("--target", type=float, default=None, metavar="USD",
                     help="project the throughput (and MFU) the cheapest rows need to cost at most USD")
    pla.add_argument("--max-gpus", type=int, default=None, metavar="N", help="at most N GPUs per job")
    pla.add_argument("--prices", default=None, help="a CSV extending/overriding the price snapshot")
    pla.add_argument("--results", default=None, help="benchmark results JSON (default: benchmarks/results.json)")
    pla.add_argument("--write-cluster", default=None, metavar="FILE", help="write a Ray cluster YAML for row 1")
    pla.add_argument("--json", action="store_true")
    pla.set_defaults(fn=cmd_cost_plan)


def cmd_cost_plan(args) -> int:
    from vlv_ray.config import load_job
    from vlv_ray.cost import catalog, plan

    cfgs = [(job, load_job(job, [])) for job in args.jobs]
    clouds = [c.strip() for c in args.clouds.split(",") if c.strip()] if args.clouds else None
    if args.max_gpus is not None and args.max_gpus < 1:
        raise UserError(f"--max-gpus: got {args.max_gpus}, expected a GPU count >= 1")
    for flag, value in (("--budget", args.budget), ("--target", args.target)):
        if value is not None and value <= 0:
            raise UserError(f"{flag}: got {value}, expected dollars > 0")
    cat = catalog.load(args.prices or cfgs[0][1].cost.prices_csv)
    with in_flags(clouds="--clouds", budget="--budget"):
        out = plan.plan(cfgs, cat, clouds=clouds, max_gpus=args.max_gpus, budget=args.budget, target=args.target,
                        **({"results": Path(args.results)} if args.results else {}))
    if args.write_cluster:
        cfg = plan.write_cluster(out["rows"][0], cat, Path(args.write_cluster))
        plan.validate(cfg)
        out["cluster_file"] = args.write_cluster
    print(json.dumps(out, indent=1) if args.json else plan.format_plan(out))
    if args.write_cluster and not args.json:
        print(f"wrote {args.write_cluster} for row 1 (validated against Ray's cluster schema)")
    return 0
