"""The `vlv-ray` command. Thin: parse arguments, call the modules, print results.

Bad input (a missing file, malformed YAML, an invalid key, an empty image folder) ends
with one line on stderr naming the problem and exit status 2; anything else is a bug
and keeps its traceback.

One module per command group, each parser beside its handler (`add_<cmd>_parser` above
`cmd_<cmd>`): toy (demo, sweep), data, infer (caption, reconstruct), eval (recon,
caption), train (train, submit), launch, cost, config. A group's `add_parsers` registers its commands; `build_parser`
calls them in the order `--help` lists them. Only this package speaks in flags.
"""
from __future__ import annotations

import argparse
import errno
import os
import sys

from vlv_ray.cli import config, cost, data, infer, launch, toy, train
from vlv_ray.cli import eval as eval_  # the module is named for its command; `eval_` spares the builtin
from vlv_ray.cli.common import user_errors

_PATH_ERRNOS = (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EISDIR, errno.ENOSPC, errno.EDQUOT)
GROUPS = (toy, data, infer, eval_, train, launch, cost, config)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vlv-ray", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in GROUPS:
        group.add_parsers(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    from vlv_ray.train.failure import TrainingFailed

    # Every line shows when printed, also when stdout is a file or a pipe (`> log`, a submitted
    # job's log that `ray job logs --follow` reads): Python would hold it in an 8 KiB block.
    # This covers Ray's forwarded worker lines too: it prints them to this same stream.
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(line_buffering=True)
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except user_errors() as e:
        msg = str(e) if not isinstance(e, FileNotFoundError) else f"{e.filename}: no such file or directory"
        print(f"vlv-ray: error: {msg.splitlines()[0] if msg else type(e).__name__}", file=sys.stderr)
        return 2
    except TrainingFailed as e:  # not bad input: exit 1, but one line all the same
        print(f"vlv-ray: error: training failed: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        # A path the user named that cannot be written or read as asked (read-only, not a
        # directory, no space): theirs to fix. Other OS errors keep their traceback.
        if e.filename is None or e.errno not in _PATH_ERRNOS:
            raise
        print(f"vlv-ray: error: {e.filename}: {e.strerror or os.strerror(e.errno)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:  # 128 + the signal's number, as a shell reports it
        print("vlv-ray: interrupted", file=sys.stderr)
        return getattr(e, "exit_code", 130)
