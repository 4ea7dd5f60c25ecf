"""Spot interruption: SIGTERM → finish the step, checkpoint, then hand the run back to Ray.

Ray Train V2 runs the training function in a thread of the worker actor, and Python only
lets the main thread install signal handlers. So the worker asks its own actor (whose
methods run on the main thread) to install the handler through `RayTrainWorker.execute`.
The handler only sets a flag; the loop checks it once per step, agrees on it across all
ranks (one all-reduce), saves a checkpoint and raises `Preempted`, so Ray Train's
FailureConfig restarts the group and it resumes from that checkpoint.
"""
from __future__ import annotations

import os
import signal
import threading

import torch

_requested = threading.Event()


class Preempted(RuntimeError):
    """Raised after the SIGTERM checkpoint so Ray Train restarts and resumes the run."""


def _on_sigterm(signum, frame) -> None:
    _requested.set()


def _install() -> int:
    signal.signal(signal.SIGTERM, _on_sigterm)
    return os.getpid()


def install() -> None:
    """Install the SIGTERM flag handler in this Ray Train worker process."""
    import ray

    _requested.clear()
    if threading.current_thread() is threading.main_thread():
        _install()
        return
    actor = ray.get_runtime_context().current_actor
    ray.get(actor.execute.remote(_install))


def requested(world: int) -> bool:
    """True on every rank when any rank got SIGTERM. Collective: call on all ranks."""
    flag = torch.tensor([1.0 if _requested.is_set() else 0.0])
    if world > 1:
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
    return bool(flag.item())


def pending() -> bool:
    """True once this process has received SIGTERM (no collective: this rank only)."""
    return _requested.is_set()
