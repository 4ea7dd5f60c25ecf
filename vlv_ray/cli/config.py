"""`vlv-ray config show | check`: a job as resolved, its models' sizes, or whether it is valid."""
from __future__ import annotations

import json
import sys
import time

from vlv_ray.cli.common import UserError, command_group, job_args
from vlv_ray.config import ConfigError, dump_yaml, load_job


def add_parsers(sub) -> None:
    csub = command_group(sub, "config", help="show or check job files")
    add_show_parser(csub)
    add_check_parser(csub)


def add_show_parser(csub) -> None:
    show = csub.add_parser("show", help="print the resolved job (secrets redacted), or its models' parameter counts")
    job_args(show)
    show.add_argument("--params", action="store_true",
                      help="parameter counts (total, trainable) per module, built from configs alone: no weights")
    show.add_argument("--json", action="store_true", help="print one JSON object")
    show.set_defaults(fn=cmd_config_show)


def cmd_config_show(args) -> int:
    cfg = load_job(args.job, args.overrides)
    if not args.params:
        print(json.dumps(cfg.to_dict(redact=True)) if args.json else dump_yaml(cfg), end="\n" if args.json else "")
        return 0
    from vlv_ray.models.params import format_param_counts, param_counts
    from vlv_ray.registry import ModelBuildError

    start = time.perf_counter()
    try:  # configs alone, on the meta device: no weights, no download
        counts = param_counts(cfg)
    except ModelBuildError as e:
        raise UserError(str(e)) from None
    seconds = round(time.perf_counter() - start, 2)
    if args.json:
        print(json.dumps({"job": cfg.name, "stage": cfg.stage, "preset": cfg.model.preset, **counts,
                          "build_seconds": seconds}))
        return 0
    print(f"{cfg.name}: stage {cfg.stage}, preset {cfg.model.preset}; parameters from configs alone "
          f"(built on the meta device in {seconds:.1f}s)")
    for model, source in counts["configs"].items():
        print(f"  {model}: {source}")
    print(format_param_counts(counts))
    return 0


def add_check_parser(csub) -> None:
    check = csub.add_parser("check", help="validate job files")
    check.add_argument("jobs", nargs="+")
    check.set_defaults(fn=cmd_config_check)


def cmd_config_check(args) -> int:
    failed = 0
    for job in args.jobs:
        try:
            load_job(job)
            print(f"ok: {job}")
        except ConfigError as e:
            print(f"vlv-ray: error: {e}", file=sys.stderr)
            failed += 1
    return 2 if failed else 0
