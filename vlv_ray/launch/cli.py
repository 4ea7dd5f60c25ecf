"""`vlv-ray launch …`: the parser and its handler, side by side (cli.py calls `add_launch_parser`)."""
from __future__ import annotations

import argparse
import json
import sys


FLAGS = {"job": "", "budget_usd": "--budget", "yes": "--yes", "name": "--down", "capacity_wait_s": "--capacity-wait",
         "throughput": "--throughput"}


def cmd_launch(args) -> int:
    from vlv_ray.config import ConfigError
    from vlv_ray.launch import run

    from vlv_ray.launch.backend import ClusterFailed

    try:
        return _launch(args, run)
    except run.LaunchError as e:  # the library names its argument; the user typed a flag
        message = e.message.replace("yes=True", "--yes")
        flag = FLAGS.get(e.arg, e.arg)
        raise ConfigError(f"{flag}: {message}" if flag else message) from None
    except ClusterFailed as e:  # not bad input: exit 1, one line all the same (the cluster is down by now)
        print(f"vlv-ray: error: launch: {e}", file=sys.stderr)
        return 1


def _launch(args, run) -> int:
    from vlv_ray.config import ConfigError

    if args.status:
        rows = run.status_rows()
        print(json.dumps(rows) if args.json else run.format_status(rows))
        return 0
    if args.down:
        return run.down(args.down)
    if not args.job or not args.cluster:
        raise ConfigError("launch: expected JOB.yaml and --cluster FILE (or --status, or --down NAME)")
    for flag, value, low in (("--budget", args.budget, 0.0), ("--capacity-wait", args.capacity_wait, 0.0),
                             ("--throughput", args.throughput, 0.0)):
        if value is not None and value <= low:
            raise ConfigError(f"{flag}: got {value:g}, expected a number > 0")
    opts = run.LaunchOptions(job=args.job, cluster=args.cluster, overrides=args.overrides, budget_usd=args.budget,
                             yes=args.yes, keep=args.keep, dry_run=args.dry_run, capacity_wait_s=args.capacity_wait,
                             allow_on_demand=args.allow_on_demand, throughput=args.throughput)
    return run.launch(opts)


def add_launch_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("launch", help="estimate, start a cluster, run JOB.yaml on it, tear it down "
                       "(re-running re-attaches); --status, --down NAME")
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
    return p
