"""Which stage a job trains (stage.py says what a stage is)."""
from __future__ import annotations

import torch

from vlv_ray.config import JobConfig
from vlv_ray.train.stage import Stage


def build_stage(cfg: JobConfig, device: torch.device) -> Stage:
    if cfg.stage == 1:
        from vlv_ray.train.stage1 import Stage1

        return Stage1(cfg, device)
    if cfg.stage == 2:
        from vlv_ray.train.stage2 import Stage2

        return Stage2(cfg, device)
    raise ValueError(f"stage: got {cfg.stage}, expected 1 or 2")
