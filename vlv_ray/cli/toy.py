"""`vlv-ray demo` and `vlv-ray sweep`: the miniature world (vlv_ray/toyworld)."""
from __future__ import annotations

import json
import shlex
from pathlib import Path

from vlv_ray.toyworld import DEMO_IMAGES, DEMO_SEEDS, DEMO_STAGE2_STEPS


def add_parsers(sub) -> None:
    add_demo_parser(sub)
    add_sweep_parser(sub)


def add_demo_parser(sub) -> None:
    demo = sub.add_parser("demo", help="the miniature world: stage 1 → stage 2 → captions, reconstructions, metrics")
    demo.add_argument("--workdir", default="vlv-demo", help="where images, shards and runs go (default: %(default)s)")
    demo.add_argument("--images", type=int, default=DEMO_IMAGES, help="stage-1 images; 10%% of them get captions for "
                      "stage 2 (default: %(default)s)")
    demo.add_argument("--json", action="store_true", help="end with the metrics as one JSON line")
    demo.add_argument("--stage1-only", action="store_true", help="stop after stage 1 and its export (a quick check)")
    demo.add_argument("--seeds", type=int, default=DEMO_SEEDS, help="stage-2 seeds (with and without stage 1) and "
                      "reconstruction sampling seeds; every figure is their mean, std, min and max (default: %(default)s)")
    demo.add_argument("--stage2", action="append", default=[], metavar="key=value",
                      help="a stage-2 job override (repeatable), e.g. --stage2 max_steps=1200 (the demo's default: "
                      f"{DEMO_STAGE2_STEPS})")
    demo.add_argument("overrides", nargs="*", metavar="key=value", help="stage-1 job overrides, e.g. max_steps=20, or model.florence=null "
                      "(the seeded random vision tower instead of the pretrained one)")
    demo.set_defaults(fn=cmd_demo)


def cmd_demo(args) -> int:
    """The whole method in the miniature world on a local Ray cluster (vlv_ray/toyworld/demo.py)."""
    from vlv_ray.cli.common import in_flags
    from vlv_ray.toyworld import demo

    given = {"images": args.images, "seeds": args.seeds, "stage1_overrides": args.overrides,
             "stage2_overrides": args.stage2, "stage1_only": args.stage1_only}
    with in_flags(seeds="--seeds", images="--images"):  # the checks only: not minutes of training
        demo.checked_stages(**given)
    metrics = demo.run(args.workdir, **given)
    if args.json:
        import ray

        ray.shutdown()  # flush Ray's forwarded worker logs first, so the JSON line is the last one
        print(json.dumps(metrics))
    return 0


def add_sweep_parser(sub) -> None:
    sweep = sub.add_parser("sweep", help="the data-volume experiment (and query-count ablation): one Ray Tune "
                           "trial per point, stage 1 then stage 2 → sweep.csv, sweep.md, sweep.png")
    sweep.add_argument("job", help="a sweep file: the miniature world's (jobs/toy-sweep.yaml) or, with `kind: jobs`, "
                       "real jobs' (jobs/paper-sweep.yaml)")
    sweep.add_argument("--images", default=None, metavar="N1,N2,…", help="stage-1 image counts (default: the file's)")
    sweep.add_argument("--queries", default=None, metavar="Q1,Q2,…",
                       help="model.num_queries per point (default: the file's; the toy world allows ≤ 16; "
                       "miniature world only)")
    sweep.add_argument("--workdir", default="vlv-sweep", help="points, Tune's results and the report (default: "
                       "%(default)s)")
    sweep.add_argument("--json", action="store_true", help="end with the rows as one JSON line")
    sweep.add_argument("--budget", type=float, default=None, metavar="USD",
                       help="real jobs (kind: jobs): start nothing when the cost model's estimate is over USD")
    sweep.add_argument("--yes", action="store_true", help="start even when the estimate is over --budget")
    sweep.set_defaults(fn=cmd_sweep)


def cmd_sweep(args) -> int:
    """The data-volume experiment / query-count ablation as Ray Tune trials (vlv_ray/toyworld/sweep.py),
    or, for a `kind: jobs` file, on real jobs (vlv_ray/sweep)."""
    from vlv_ray.config import JobsSweepConfig, load_sweep
    from vlv_ray.toyworld import sweep

    images, queries = sweep.parse_counts("--images", args.images), sweep.parse_counts("--queries", args.queries)
    spec = load_sweep(args.job, images=images, queries=queries)
    if isinstance(spec, JobsSweepConfig):
        return cmd_sweep_jobs(args, spec)
    if args.budget is not None or args.yes:
        from vlv_ray.cli.common import UserError

        raise UserError(f"{'--budget' if args.budget is not None else '--yes'}: for sweeps of real jobs (kind: jobs); "
                        f"{args.job} is a miniature-world sweep (its points cost cents, priced after they run)")
    stages = sweep.stages_of(spec, Path(args.job), queries_key="--queries" if queries else "queries")
    rows = sweep.run(args.job, spec, stages, workdir=args.workdir)
    if args.json:
        import ray

        ray.shutdown()  # flush Ray's forwarded worker logs first, so the JSON line is the last one
        print(json.dumps(rows))
    return 0 if all(r["status"] == "ok" for r in rows) else 1


def cmd_sweep_jobs(args, spec) -> int:
    """A sweep of real jobs: every point validated and priced, the budget checked, then run."""
    from vlv_ray.cli.common import UserError, in_flags
    from vlv_ray.sweep import plan, run

    if args.budget is not None and args.budget <= 0:
        raise UserError(f"--budget: got {args.budget}, expected dollars > 0")
    pts = plan.points(spec, Path(args.job))
    print(f"[sweep] {spec.name}: {len(pts)} points ({spec.mode}), stage 1 {spec.stage1.job}"
          + (f", stage 2 {spec.stage2.job}" if spec.stage2.job else "")
          + f"; measured on {spec.eval.images} images of {spec.eval.data}; cost model's estimate before starting:",
          flush=True)
    total = plan.total_usd(spec, pts)
    print(plan.format_estimates(pts, spec.mode, total), flush=True)
    with in_flags(budget_usd="--budget", yes="--yes"):
        plan.check_budget(total, args.budget, args.yes)
    from vlv_ray.cli.common import stopped
    from vlv_ray.train import launch, preempt

    again = shlex.join(["vlv-ray", "sweep", args.job, *(["--images", args.images] if args.images else []),
                        "--workdir", args.workdir, "--yes"])
    try:
        rows = run.run(spec, pts, workdir=args.workdir, resume_hint=again)
    except (launch.Stopped, preempt.Interrupted) as e:  # SIGTERM/SIGINT: finished points are kept
        return stopped(e, again)
    if args.json:
        import ray

        ray.shutdown()  # flush Ray's forwarded worker logs first, so the JSON line is the last one
        print(json.dumps(rows))
    return 0 if all(r["status"] == "ok" for r in rows) else 1
