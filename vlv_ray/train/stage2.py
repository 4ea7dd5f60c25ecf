"""Stage 2: images → VLV encoder → caption embeddings → frozen CLIP text → ψ → LLM → caption.

The VLV encoder comes from the stage-1 export (`model.stage1`). The DeepSpeed engine wraps
`CaptionModel` (models/caption_model.py): the encoder (trainable when `model.train_encoder`),
SD's CLIP text encoder (always frozen) and the captioner (projector ψ + LLM).
Batches need a caption: rows without one are dropped and counted (`no_caption`).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from vlv_ray.config import JobConfig
from vlv_ray.models import export, speed
from vlv_ray.models.caption_model import build_caption_model
from vlv_ray.models.modes import eval_mode
from vlv_ray.train.stage import Stage


class Stage2(Stage):
    def __init__(self, cfg: JobConfig, device: torch.device):
        super().__init__(cfg, device)
        encoder, decoder, self.stage1_meta = export.load_stage1(cfg.model.stage1, **cfg.storage.options)
        if self.stage1_meta["resolution"] != cfg.data.resolution:
            raise ValueError(f"data.resolution: got {cfg.data.resolution}, but the stage-1 export "
                             f"{cfg.model.stage1} was trained at {self.stage1_meta['resolution']}")
        text_encoder = decoder.text_encoder.to(speed.frozen_dtype(cfg.model, cfg.deepspeed.precision))
        del decoder  # the VAE and UNet are not needed to caption
        self.trainable = build_caption_model(cfg.model, encoder, text_encoder, seed=cfg.seed)
        speed.apply(cfg.model, speed.stage2_modules(self.trainable))
        self.trainable.captioner.max_caption_tokens = cfg.model.max_caption_tokens
        self.tokenizer = self.trainable.captioner.tokenizer
        self.max_tokens = cfg.model.max_caption_tokens

    def collate(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        captions = [str(c) for c in batch["caption"]]
        # Target tokens per caption: its tokens (cut to the limit) plus end-of-text.
        lengths = [len(ids) for ids in self.tokenizer(captions, add_special_tokens=False)["input_ids"]]
        return {**super().collate(batch), "caption": captions,
                "tokens": sum(min(n, self.max_tokens - 1) + 1 for n in lengths)}

    def evaluate(self, engine, batch: dict[str, Any]) -> dict[str, Any]:
        """Greedy captions of the batch's first images beside their references."""
        n = self.cfg.logging.eval_images
        with eval_mode(engine.module) as module:
            # ZeRO-3 gathers weights collectively: every rank must run as many forwards.
            texts = module.captioner.generate(module.prefix(batch["image"][:n].to(self.device)),
                                              max_new_tokens=self.max_tokens,
                                              synced_gpus=self.cfg.deepspeed.zero_stage == 3)
        return {"captions": [{"key": k, "caption": t, "reference": r}
                             for k, t, r in zip(batch["key"][:n], texts, batch["caption"][:n])]}

    def loss(self, engine, batch: dict[str, Any], generator: torch.Generator) -> torch.Tensor:
        images = batch["image"].to(self.device, non_blocking=True)
        return engine(images, batch["caption"])
