"""What a training run prints: our lines, Ray's and the libraries' errors, little else.

A 4-step run used to print ~65–100 lines, most of them advice meant for Ray's or
DeepSpeed's own developers, some at error level while nothing was wrong. Each setting
below names the line it removes; none of them hides an error.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import warnings
from pathlib import Path

# DeepSpeed compiles C++ ops into this cache; a user running `vlv-ray` directly (not
# through `make`) keeps it across runs too.
DEFAULT_TORCH_EXTENSIONS_DIR = Path("~/.cache/vlv-ray/torch_extensions").expanduser()


def process_env(use_gpu: bool) -> dict[str, str]:
    """Env for the driver and the workers (each key only where the user has not set it)."""
    env = {
        "TORCH_EXTENSIONS_DIR": str(DEFAULT_TORCH_EXTENSIONS_DIR),
        # Ray Train 2.60 patches `print` in workers to tee into its logger, which shows every
        # line twice on the driver; our lines are already formatted for people.
        "RAY_TRAIN_ENABLE_PRINT_PATCH": "0",
    }
    if not use_gpu:
        # Otherwise DeepSpeed guesses the accelerator in every process and warns
        # "Setting accelerator to CPU. If you have GPU … we were unable to detect it".
        env["DS_ACCELERATOR"] = "cpu"
    return {k: os.environ.get(k, v) for k, v in env.items()}


def apply_to_this_process(use_gpu: bool) -> None:
    for k, v in process_env(use_gpu).items():
        os.environ.setdefault(k, v)


def in_worker() -> None:
    """Called first in each training worker."""
    import ray.data  # noqa: F401  (Ray Data sets its loggers' levels when imported)
    from ray.train.v2._internal.execution import context

    # Ray Train's "Reporting training result 1: TrainingReport(…)" on every report (its
    # logger is named by file path, so "ray.train" does not reach it); our step lines say it.
    logging.getLogger(context.__file__).setLevel(logging.WARNING)
    # "Progress bars disabled. To enable, set …": we disable them on purpose (one bar per
    # worker per epoch would interleave with the step lines).
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)
    logging.getLogger(STARVED_LOGGER).addFilter(_say_what_a_starved_reader_means)
    # DeepSpeed's ZeRO all-gather still calls the old name; nothing for a user to do.
    warnings.filterwarnings("ignore", category=FutureWarning,
                            message=r".*all_gather_into_tensor` is deprecated")
    _skip_deepspeed_shm_op()


STARVED_LOGGER = "ray.data._internal.execution.resource_manager"
STARVED_NOTE = ("[vlv-ray] note: this rank's data reader has had no CPU for a minute: Ray Data shares the CPUs "
                "the training workers leave among the ranks' readers, and the others' hold them now. It goes on "
                "when they let go (the step lines' 'data' seconds show the wait); if the step lines stop, the "
                "cluster has too few CPUs beyond scaling.num_workers × scaling.cpus_per_worker")


def _say_what_a_starved_reader_means(record: logging.LogRecord) -> bool:
    """Ray Data 2.60 warns "Cluster resources are not enough to run any task from …MapBatches(
    read_and_decode). The job may hang forever unless the cluster scales up" once a dataset has had
    no CPU for 60 s. Each rank runs its own dataset; Ray Data's coordinator gives the training
    workers their CPUs, then the bundles a dataset asks for while busy, then splits what is left
    evenly, so one rank's busy reader can hold the spare CPUs while another's waits (measured on 4
    CPUs, 2 ranks: the starved rank's epoch took 58 s against 45 s, and both finished). It has not
    hung in any run here; the line says what it means instead."""
    if record.getMessage().startswith("Cluster resources are not enough to run any task from"):
        record.msg, record.args = STARVED_NOTE, ()
    return True


def _skip_deepspeed_shm_op() -> None:
    """DeepSpeed's CPU backend compiles a shared-memory op (≈3 min on a loaded 2-core box,
    silently) on first use. Only `inference_all_reduce` uses it; training's collectives go
    through torch.distributed (gloo), so we never build it."""
    import importlib

    # By module path: `deepspeed.comm.torch` as an attribute is the torch package itself.
    ds_torch = importlib.import_module("deepspeed.comm.torch")
    ds_torch.build_shm_op = lambda: None


@contextlib.contextmanager
def captured():
    """Hold back what a block prints (stdout and stderr); replay it if the block fails."""
    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
            yield
    except BaseException:
        sys.stderr.write(buf.getvalue())
        raise
