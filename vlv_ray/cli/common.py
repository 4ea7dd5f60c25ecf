"""What every command group shares: the user-error type, and the arguments several take."""
from __future__ import annotations

import argparse
import contextlib
import re
import sys
from typing import Iterator


class UserError(Exception):
    """An error whose message is the whole story for the user."""


def user_errors() -> tuple[type[BaseException], ...]:
    """Errors that are bad input: one line and exit 2, no traceback."""
    from vlv_ray.config import ConfigError
    from vlv_ray.cost.catalog import CatalogError
    from vlv_ray.data.shards import DataError
    from vlv_ray.models.export import ExportError
    from vlv_ray.storage import StorageError

    return (UserError, ConfigError, CatalogError, DataError, StorageError, ExportError, FileNotFoundError)


@contextlib.contextmanager
def in_flags(**flags: str) -> Iterator[None]:
    """Library errors name a function's arguments (`shard_rows: got 0, …`, `pass overwrite=True`);
    a user typed flags. Re-raise such an error as a UserError naming the flag instead
    (`in_flags(shard_rows="--shard-rows")`); any other error passes through untouched."""
    try:
        yield
    except ValueError as e:
        msg = str(e)
        for arg, flag in flags.items():
            msg = re.sub(rf"(?<![\w.-]){arg}=True\b", flag, msg)  # a switch: pass overwrite=True → --overwrite
            msg = re.sub(rf"(?<![\w.-]){arg}(?=[:=])", flag, msg)  # shard_rows: got 0 → --shard-rows: got 0
        if msg == str(e):
            raise
        raise UserError(msg) from None


def stopped(e: BaseException, again: str) -> int:
    """A run a signal stopped: `launch.Stopped` (every rank checkpointed; its message names the
    command to resume with) or `preempt.Interrupted` (before the workers started, or a second
    signal). Its one line on stderr, with `again` (the command to run to go on); its exit code."""
    from vlv_ray.train import launch

    if isinstance(e, launch.Stopped):
        print(f"vlv-ray: {e}", file=sys.stderr)
    else:
        print(f"vlv-ray: stopped by {e.signame} {e.when}; run the same command to go on: {again}", file=sys.stderr)
    return e.exit_code


def command_group(sub, name: str, help: str):
    """`vlv-ray NAME SUBCOMMAND …`: the group's parser, and the subparsers its commands join."""
    group = sub.add_parser(name, help=help)
    return group.add_subparsers(dest=f"{name}_command", required=True, metavar="SUBCOMMAND")


def job_args(p: argparse.ArgumentParser, *, job_help: str | None = None, overrides_help: str | None = None) -> None:
    """JOB.yaml [key=value …]: a job file and its dotted overrides."""
    p.add_argument("job", help=job_help)
    p.add_argument("overrides", nargs="*", metavar="key=value", help=overrides_help)


def storage_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--endpoint-url", default=None, help="S3-compatible endpoint (else AWS_ENDPOINT_URL)")
    p.add_argument("--region", default=None, help="S3 region (else AWS_DEFAULT_REGION)")


def storage_kw(args: argparse.Namespace) -> dict[str, str | None]:
    """The keyword arguments every `vlv_ray.storage` call takes, from `storage_args`' flags."""
    return {"endpoint_url": args.endpoint_url, "region": args.region}
