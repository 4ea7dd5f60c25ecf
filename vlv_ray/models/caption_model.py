"""What stage 2 trains and `vlv-ray caption` runs: VLV encoder → frozen CLIP text → ψ → LLM.

The encoder comes from a stage-1 export; it is trained too when `train_encoder` (the
paper's best setting). SD's CLIP text encoder is always frozen and always in eval mode.
"""
from __future__ import annotations

import torch
from torch import nn

from vlv_ray.models.decoder import clip_text_from_embeds


class CaptionModel(nn.Module):
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


def build_caption_model(cfg_model, encoder, text_encoder, *, seed: int = 0, empty: bool = False,
                        device: str = "meta") -> CaptionModel:
    """The captioner of `cfg_model.preset` (see `presets.build_captioner`) on top of a stage-1 encoder.

    `cfg_model` needs `preset`, `llm` and `train_encoder` (a `ModelConfig` or an export's meta).
    `empty`: from configs alone, on `device` (see `presets.build_stage1`).
    """
    from vlv_ray.models.presets import build_captioner

    captioner = build_captioner(cfg_model, prefix_dim=text_encoder.config.hidden_size, seed=seed, empty=empty,
                                device=device)
    return CaptionModel(encoder, text_encoder, captioner, train_encoder=cfg_model.train_encoder)
