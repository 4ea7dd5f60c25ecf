"""A failed training run as one line: the root exception, with the full story in a log file.

Ray Train raises a `WorkerGroupError` (one exception per failed rank) or a
`ControllerError` on the driver; each wraps the real cause under layers of Ray's own
exceptions. The line names the rank and the innermost exception; the tracebacks of every
rank go to `<storage_path>/<name>/logs/failure-<time>.txt`, named in the line.
"""
from __future__ import annotations

import time
import traceback

from vlv_ray import storage
from vlv_ray.paths import RunPaths


class TrainingFailed(Exception):
    """Training failed inside Ray; the message is the one line for the user."""


def root_cause(exc: BaseException) -> BaseException:
    """The innermost exception: through Ray's `cause`, then Python's __cause__/__context__ chain."""
    seen = set()
    while id(exc) not in seen:
        seen.add(id(exc))
        inner = getattr(exc, "cause", None) or getattr(exc, "controller_failure", None) \
            or exc.__cause__ or exc.__context__
        if not isinstance(inner, BaseException):
            break
        exc = inner
    return exc


def failures(error: BaseException) -> dict[str, BaseException]:
    """{where: exception} for each rank (or the controller) that failed."""
    per_rank = getattr(error, "worker_failures", None)
    if per_rank:
        return {f"rank {r}": e for r, e in sorted(per_rank.items())}
    return {"controller": getattr(error, "controller_failure", None) or error}


def one_line(exc: BaseException) -> str:
    text = storage.redact(str(exc)).strip()
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return f"{type(exc).__name__}: {first[:300]}" if first else type(exc).__name__


def describe(error: BaseException, paths: RunPaths) -> str:
    """One line for the user; the full tracebacks written under the run's logs/ (best effort)."""
    found = failures(error)
    where, first = next(iter(found.items()))
    line = f"{where}: {one_line(root_cause(first))}"
    if len(found) > 1:
        line += f" (and {len(found) - 1} more ranks)"
    uri = storage.join(paths.logs, f"failure-{time.strftime('%Y%m%d-%H%M%S')}.txt")
    # Ray's message carries the workers' own tracebacks (the exceptions lose theirs when pickled).
    text = f"==== {type(error).__name__}\n{error}\n\n" + "".join(
        f"==== {w}\n" + "".join(traceback.format_exception(e)) + "\n" for w, e in found.items())
    try:
        storage.write_bytes_atomic(uri, storage.redact(text).encode(), **paths.storage)
        return f"{line}; full traceback in {uri}"
    except OSError as e:
        return f"{line}; (could not write the traceback to {uri}: {type(e).__name__})"
