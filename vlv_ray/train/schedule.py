"""What each step uses besides data: its learning rate and its random seed."""
from __future__ import annotations

import math

from vlv_ray.config import OptimConfig


def lr_at(step: int, max_steps: int, opt: OptimConfig) -> float:
    """Linear warm-up, then one decay over the whole run down to `lr × min_lr_ratio`.

    The decay spans exactly [warmup_steps, max_steps]: it never restarts (the public VLV
    code's DeepSpeed WarmupCosineLR restarted every 40K steps of a 200K-step run).
    """
    if step < opt.warmup_steps:
        return opt.lr * (step + 1) / opt.warmup_steps
    floor = opt.lr * opt.min_lr_ratio
    if opt.schedule == "constant":
        return opt.lr
    progress = min(1.0, (step - opt.warmup_steps) / max(1, max_steps - opt.warmup_steps))
    if opt.schedule == "linear":
        return floor + (opt.lr - floor) * (1.0 - progress)
    return floor + (opt.lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def step_seed(seed: int, step: int, rank: int, micro: int | None = None) -> int:
    """The seed of every random draw at (step, rank[, micro-step]).

    Dropout uses the global generator, seeded per (step, rank); noise and timesteps a
    generator per micro-step. So a checkpoint needs no RNG state, and a resumed run draws
    exactly what it would have drawn without the interruption.
    """
    base = (seed * 1_000_003 + step) * 4099 + rank
    return base % (2**63) if micro is None else base * 131 + micro
