"""`vlv-ray cost estimate | report`: what a job will cost, what a run has cost (vlv_ray/cost)."""
from __future__ import annotations

import json
from pathlib import Path

from vlv_ray.cli.common import UserError, command_group, job_args, storage_args, storage_kw


def add_parsers(sub) -> None:
    cosub = command_group(sub, "cost", help="estimate a job's cost, or report what a run has cost")
    add_estimate_parser(cosub)
    add_report_parser(cosub)


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
    e = estimate.estimate(cfg, cat, throughput=args.throughput, instance=args.instance,
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
