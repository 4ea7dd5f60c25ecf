"""`vlv-ray train` and `vlv-ray submit`: run a job here, or on a Ray cluster (vlv_ray/train)."""
from __future__ import annotations

import shlex
import sys

from vlv_ray.cli.common import in_flags, job_args, stopped


def add_parsers(sub) -> None:
    add_train_parser(sub)
    add_submit_parser(sub)


def add_train_parser(sub) -> None:
    train = sub.add_parser("train", help="run (or resume) the job in JOB.yaml")
    job_args(train, job_help="a job file, e.g. jobs/tiny.yaml", overrides_help="dotted overrides, e.g. optim.lr=1e-4")
    train.add_argument("--local", action="store_true",
                       help="debug: run the loop in this process (Ray Train local mode; checkpoints are not persisted)")
    train.add_argument("--allow-changes", action="store_true",
                       help="resume although settings differ from the checkpoint's (recorded in <run>/history.jsonl)")
    train.set_defaults(fn=cmd_train)


def cmd_train(args) -> int:
    from vlv_ray.config import load_job
    from vlv_ray.paths import for_job
    from vlv_ray.train import launch, preempt

    cfg, paths = for_job(load_job(args.job, args.overrides))
    again = shlex.join(["vlv-ray", "train", args.job, *args.overrides, *(["--allow-changes"] * args.allow_changes)])
    try:
        with in_flags(allow_changes="--allow-changes"):
            result = launch.run(cfg, paths=paths, local=args.local, allow_changes=args.allow_changes,
                                resume_hint=again)
    except (launch.Stopped, preempt.Interrupted) as e:  # SIGTERM/SIGINT (`ray job stop`, Ctrl-C)
        return stopped(e, again)
    return _report_result(result, paths)


def _report_result(result, paths) -> int:
    if result.error:
        from vlv_ray.train.failure import describe

        line = describe(result.error, paths)
        print(f"vlv-ray: error: training failed: {line}", file=sys.stderr)
        return 1
    m = result.metrics or {}
    ckpt = result.checkpoint.path if result.checkpoint else "none"
    if m:
        print(f"done: step {m.get('step')} loss {m.get('loss', float('nan')):.4f}; checkpoint: {ckpt}")
    else:
        print(f"done: nothing to do (already complete); checkpoint: {ckpt}")
    return 0


def add_submit_parser(sub) -> None:
    subm = sub.add_parser("submit", help="submit JOB.yaml to a Ray cluster; the current directory is uploaded")
    job_args(subm, job_help="a job file inside the current directory, e.g. jobs/stage1-paper.yaml")
    subm.add_argument("--address", default=None,
                      help="the cluster's dashboard, e.g. http://head:8265 (default: $RAY_API_SERVER_ADDRESS)")
    subm.add_argument("--wait", action="store_true", help="wait for the job to finish; exit 1 unless it succeeded")
    subm.add_argument("--agent-wait", type=float, default=90.0, metavar="SECONDS",
                      help="how long to retry while the head answers that its job agent is not up (default: 90)")
    subm.add_argument("--forward-secrets", action="store_true",
                      help="send AWS_* and WANDB_API_KEY from this shell to the job; Ray then shows them in "
                           "`ray job list`, its jobs API and the head's logs (default: the nodes' own credentials)")
    subm.set_defaults(fn=cmd_submit)


def cmd_submit(args) -> int:
    from vlv_ray.train.submit import submit

    _, status = submit(args.job, address=args.address, overrides=args.overrides, wait=args.wait,
                       forward_secrets=args.forward_secrets, agent_wait_s=args.agent_wait)
    return 0 if status in (None, "SUCCEEDED") else 1
