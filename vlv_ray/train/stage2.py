"""Stage 2: images → VLV encoder → caption embeddings → frozen CLIP text → ψ → LLM → caption.

The VLV encoder comes from the stage-1 export (`model.stage1`). The DeepSpeed engine wraps
`CaptionModel`: the encoder (trainable when `model.train_encoder`, as in the paper's best
setting), SD's CLIP text encoder (always frozen) and the captioner (projector ψ + LLM).
Batches need a caption: rows without one are dropped and counted (`no_caption`).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from vlv_ray.config import JobConfig
from vlv_ray.models.decoder import clip_text_from_embeds


class CaptionModel(nn.Module):
    """What stage 2 trains and what `vlv-ray caption` runs."""

    def __init__(self, encoder: nn.Module, text_encoder: nn.Module, captioner: nn.Module, *, train_encoder: bool):
        super().__init__()
        self.encoder, self.text_encoder, self.captioner = encoder, text_encoder, captioner
        self.text_encoder.requires_grad_(False)
        if not train_encoder:
            self.encoder.requires_grad_(False)
        self.train_encoder = train_encoder

    def train(self, mode: bool = True) -> "CaptionModel":
        super().train(mode)
        self.text_encoder.eval()  # frozen: never dropout
        if not self.train_encoder:
            self.encoder.eval()
        return self

    def prefix(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [B, H, W, 3] → the CLIP text encoder's states of the caption embeddings."""
        embeds = self.encoder(images)
        dtype = next(self.text_encoder.parameters()).dtype
        return clip_text_from_embeds(self.text_encoder, embeds.to(dtype))

    def forward(self, images: torch.Tensor, captions: list[str]) -> torch.Tensor:
        return self.captioner.loss(self.prefix(images), captions)

    @torch.no_grad()
    def caption(self, images: torch.Tensor, **generate_kw) -> list[str]:
        return self.captioner.generate(self.prefix(images), **generate_kw)


def build_caption_model(cfg_model, encoder, text_encoder, *, seed: int = 0) -> CaptionModel:
    """The captioner for a preset on top of a stage-1 encoder: tiny (seeded) or the job's LLM."""
    from vlv_ray.models import captioner as cap

    prefix_dim = text_encoder.config.hidden_size
    if cfg_model.preset == "tiny":
        captioner = cap.tiny_captioner(prefix_dim=prefix_dim, seed=seed)
    elif cfg_model.preset == "toy":  # the miniature world's LM (vlv_ray/toyworld)
        from vlv_ray.toyworld.models import toy_captioner

        captioner = toy_captioner(prefix_dim=prefix_dim, seed=seed)
    else:
        captioner = cap.Captioner.from_llm(cfg_model.llm, prefix_dim=prefix_dim)
    return CaptionModel(encoder, text_encoder, captioner, train_encoder=cfg_model.train_encoder)


class Stage2:
    def __init__(self, cfg: JobConfig, device: torch.device):
        from vlv_ray.models import export
        from vlv_ray.train.stages import DTYPES

        kw = {"endpoint_url": cfg.storage.endpoint_url, "region": cfg.storage.region}
        encoder, decoder, self.stage1_meta = export.load_stage1(cfg.model.stage1, **kw)
        if self.stage1_meta["resolution"] != cfg.data.resolution:
            raise ValueError(f"data.resolution: got {cfg.data.resolution}, but the stage-1 export "
                             f"{cfg.model.stage1} was trained at {self.stage1_meta['resolution']}")
        text_encoder = decoder.text_encoder.to(DTYPES[cfg.deepspeed.precision])
        del decoder  # the VAE and UNet are not needed to caption
        self.trainable = build_caption_model(cfg.model, encoder, text_encoder, seed=cfg.seed)
        self.trainable.captioner.max_caption_tokens = cfg.model.max_caption_tokens
        self.device = device
        self.tokenizer = self.trainable.captioner.tokenizer
        self.max_tokens = cfg.model.max_caption_tokens

    def collate(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        images = np.ascontiguousarray(batch["image"])
        if not images.flags.writeable:
            images = images.copy()
        captions = [str(c) for c in batch["caption"]]
        # Target tokens per caption: its tokens (cut to the limit) plus end-of-text.
        lengths = [len(ids) for ids in self.tokenizer(captions, add_special_tokens=False)["input_ids"]]
        return {"image": torch.from_numpy(images), "key": list(batch["key"]), "caption": captions,
                "tokens": sum(min(n, self.max_tokens - 1) + 1 for n in lengths)}

    def evaluate(self, engine, batch: dict[str, Any], cfg: JobConfig) -> dict[str, Any]:
        """Greedy captions of the batch's first images beside their references."""
        n = cfg.logging.eval_images
        module = engine.module
        was_training = module.training
        module.eval()
        try:
            with torch.no_grad():
                # ZeRO-3 gathers weights collectively: every rank must run as many forwards.
                texts = module.captioner.generate(module.prefix(batch["image"][:n].to(self.device)),
                                                  max_new_tokens=self.max_tokens,
                                                  synced_gpus=cfg.deepspeed.zero_stage == 3)
        finally:
            module.train(was_training)
        return {"captions": [{"key": k, "caption": t, "reference": r}
                             for k, t, r in zip(batch["key"][:n], texts, batch["caption"][:n])]}

    def loss(self, engine, batch: dict[str, Any], generator: torch.Generator) -> torch.Tensor:
        images = batch["image"].to(self.device, non_blocking=True)
        return engine(images, batch["caption"])
