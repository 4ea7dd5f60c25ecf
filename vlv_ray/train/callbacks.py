"""User callbacks: code of yours that runs inside the training loop, on every worker.

A job lists them by import path; each is built once per worker and called at the end of
every step, after the optimizer step and the log line, before the checkpoint decision:

    callbacks:
      - path: my_project.profiling:StepProfiler   # "package.module:ClassName"
        args: {every: 100}                        # ClassName(**args)

    class StepProfiler:
        def __init__(self, every: int): ...
        def on_step_end(self, event: StepEnd) -> None: ...   # required
        def close(self) -> None: ...                          # optional: at the end of the run
        def on_checkpoint_phase(self, event: CheckpointPhase) -> None: ...   # optional: see below

`on_checkpoint_phase` sees each save pass "staged" (this rank's files written locally),
"uploaded" (this rank's upload done) and "gathered" (every rank's upload confirmed, before
rank 0 marks the checkpoint complete): time a save, or (the fault tests) kill a rank there.

The module must be importable on the workers: a package installed there, or a module
in the directory you start the driver (or `vlv-ray submit`) from. Callbacks do not enter
the config hash: adding one to a run and resuming it is the same run. A callback that
calls a collective (all-reduce) must do so on every rank.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

from vlv_ray.config import CallbackConfig, JobConfig


@dataclass
class StepEnd:
    """What a callback sees at the end of a step."""

    step: int  # optimizer steps done, this one included
    rank: int
    world: int
    epoch: int
    keys: list[str]  # the rows this rank trained on in this step, in order
    metrics: dict[str, Any]  # this step's logged metrics (loss averaged over ranks, lr, throughput, ...)
    resumed: bool  # this run started from a checkpoint
    cfg: JobConfig
    engine: Any = field(repr=False, default=None)  # the DeepSpeed engine (engine.module: the model)


@dataclass
class CheckpointPhase:
    """What a callback sees at each phase of a checkpoint save."""

    phase: str  # "staged" | "uploaded" | "gathered"
    step: int
    rank: int


class Callbacks:
    def __init__(self, configs: list[CallbackConfig]):
        self.items = [_build(i, c) for i, c in enumerate(configs)]

    def step_end(self, event: StepEnd) -> None:
        for cb in self.items:
            cb.on_step_end(event)

    def checkpoint_phase(self, phase: str, step: int, rank: int) -> None:
        for cb in self.items:
            if hasattr(cb, "on_checkpoint_phase"):
                cb.on_checkpoint_phase(CheckpointPhase(phase, step, rank))

    def close(self) -> None:
        for cb in self.items:
            if hasattr(cb, "close"):
                cb.close()


def _build(i: int, c: CallbackConfig):
    module_name, _, attr = c.path.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"callbacks[{i}].path: cannot import {c.path!r} on this worker ({e})") from None
    cb = factory(**c.args)
    if not callable(getattr(cb, "on_step_end", None)):
        raise ValueError(f"callbacks[{i}].path: {c.path} built an object without an on_step_end(event) method")
    return cb
