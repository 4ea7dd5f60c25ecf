"""`vlv-ray launch`: estimate, start a cluster, run a job on it, tear it down (vlv_ray/launch)."""
from __future__ import annotations

import json
import sys

from vlv_ray.cli.common import UserError, in_flags


def add_parsers(sub) -> None:
    p = sub.add_parser("launch", help="estimate, start a cluster, run JOB.yaml on it, tear it down "
                       "(re-running re-attaches); --status, --down NAME")
    # JOB is optional: --status and --down take none.
    p.add_argument("job", nargs="?", help="a job file inside the current directory (uploaded, as by `submit`)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="job overrides, as on `vlv-ray train`")
    p.add_argument("--cluster", metavar="FILE", help="a Ray cluster-launcher YAML, e.g. cluster/aws-spot.yaml "
                   "(${VLV_*} filled from the environment); cluster/local-fake.yaml runs on this machine")
    p.add_argument("--budget", type=float, default=None, metavar="USD",
                   help="dollars for the whole cluster from `up` to teardown; the job checkpoints and stops within it")
    p.add_argument("--yes", action="store_true", help="launch even when the estimate is over --budget")
    p.add_argument("--keep", action="store_true", help="leave the cluster up when the job ends")
    p.add_argument("--dry-run", action="store_true", help="check everything, print the commands and the rendered "
                   "cluster file; start nothing")
    p.add_argument("--capacity-wait", type=float, default=600.0, metavar="S",
                   help="seconds a worker pool may leave work waiting with no node joined before launch switches "
                        "to the next pool (default: %(default)g)")
    p.add_argument("--allow-on-demand", action="store_true",
                   help="after the spot pools, fall back to on-demand copies of them")
    p.add_argument("--throughput", type=float, default=None, metavar="SAMPLES_PER_S",
                   help="samples/s per GPU for the estimate (default: measured figures in benchmarks/results.json)")
    p.add_argument("--status", action="store_true", help="the clusters launch started, up or not")
    p.add_argument("--json", action="store_true", help="with --status: one JSON list")
    p.add_argument("--down", metavar="NAME", help="tear down the cluster of launch NAME")
    p.set_defaults(fn=cmd_launch)


def cmd_launch(args) -> int:
    from vlv_ray.launch import run
    from vlv_ray.launch.backend import ClusterFailed

    if args.status:
        rows = run.status_rows()
        print(json.dumps(rows) if args.json else run.format_status(rows))
        return 0
    try:
        if args.down:
            with in_flags(name="--down"):
                return run.down(args.down)
        if not args.job or not args.cluster:
            raise UserError("launch: expected JOB.yaml and --cluster FILE (or --status, or --down NAME)")
        for flag, value in (("--budget", args.budget), ("--capacity-wait", args.capacity_wait),
                            ("--throughput", args.throughput)):
            if value is not None and value <= 0:
                raise UserError(f"{flag}: got {value:g}, expected a number > 0")
        opts = run.LaunchOptions(job=args.job, cluster=args.cluster, overrides=args.overrides,
                                 budget_usd=args.budget, yes=args.yes, keep=args.keep, dry_run=args.dry_run,
                                 capacity_wait_s=args.capacity_wait, allow_on_demand=args.allow_on_demand,
                                 throughput=args.throughput)
        with in_flags(budget_usd="--budget", yes="--yes"):
            return run.launch(opts)
    except ClusterFailed as e:  # not bad input: exit 1, one line all the same (the cluster is down by now)
        print(f"vlv-ray: error: launch: {e}", file=sys.stderr)
        return 1
