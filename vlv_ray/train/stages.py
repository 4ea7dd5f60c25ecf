"""Which stage a job trains: the only place the loop learns what differs between stages."""
from __future__ import annotations

import torch

from vlv_ray.config import JobConfig

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def build_stage(cfg: JobConfig, device: torch.device):
    """A stage has `.trainable` (the module DeepSpeed wraps), `.collate` and `.loss`."""
    if cfg.stage == 1:
        from vlv_ray.train.stage1 import Stage1

        return Stage1(cfg, device)
    raise NotImplementedError("stage 2 training is not built yet (issue #4)")
