"""Which stage a job trains: the only place the loop learns what differs between stages."""
from __future__ import annotations

import torch

from vlv_ray.config import JobConfig

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def build_stage(cfg: JobConfig, device: torch.device):
    """A stage has `.trainable` (the module DeepSpeed wraps), `.collate` and `.loss`.

    A batch may carry `tokens` (target tokens in it): the log line then shows tokens/s.
    """
    if cfg.stage not in (1, 2):
        raise ValueError(f"stage: got {cfg.stage}, expected 1 or 2")
    if cfg.stage == 1:
        from vlv_ray.train.stage1 import Stage1

        return Stage1(cfg, device)
    from vlv_ray.train.stage2 import Stage2

    return Stage2(cfg, device)
