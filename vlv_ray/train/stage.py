"""What a stage is to the loop: the only place the loop learns what differs between stages.

A stage owns its model (`trainable`, the module DeepSpeed wraps; frozen parts beside it),
turns a Ray Data batch into tensors (`collate`) and a batch into a loss (`loss`), and may
show how training goes (`evaluate`). The loop calls exactly these, on every rank.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from vlv_ray.config import JobConfig


class Stage:
    """Base class of a training stage. Subclasses set `trainable` and define `loss`."""

    trainable: nn.Module
    vae_digest: str | None = None  # which latent cache (data/latents.py) fits; None: no cache

    def __init__(self, cfg: JobConfig, device: torch.device):
        self.cfg, self.device = cfg, device

    def collate(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        """numpy batch → tensors. A batch may carry `tokens` (target tokens): the log shows tokens/s."""
        images = np.ascontiguousarray(batch["image"])
        if not images.flags.writeable:  # Ray hands out read-only views of its object store
            images = images.copy()
        # Ray Data's default collate cannot handle the string key column.
        return {"image": torch.from_numpy(images), "key": list(batch["key"])}

    def loss(self, engine, batch: dict[str, Any], generator: torch.Generator) -> torch.Tensor:
        raise NotImplementedError

    def evaluate(self, engine, batch: dict[str, Any]) -> dict[str, Any]:
        """Eval artefacts by name: images (uint8 arrays) or tables (lists of dicts); none by default.

        Called on every rank at the same step (ZeRO-3 gathers weights collectively).
        """
        return {}
