"""CLIP scores: torchmetrics' CLIPScore (100 · max(cos, 0)) for text–image and image–image.

The model and processor come from a local directory or hub id, loaded as torchmetrics
loads its openai models (`CLIPModel` / `CLIPProcessor.from_pretrained`; torchmetrics takes
other paths through a loader callable); the paper-scale default is torchmetrics' own,
openai/clip-vit-large-patch14.
"""
from __future__ import annotations

from functools import partial

import torch

DEFAULT = "openai/clip-vit-large-patch14"


class ClipError(ValueError):
    """A CLIP model that cannot be loaded from the path given."""


class ClipScorer:
    """One CLIPScore metric, reset per batch: each call returns the batch's mean score."""

    def __init__(self, path: str, device: torch.device | None = None):
        from torchmetrics.multimodal.clip_score import CLIPScore

        try:
            self.metric = CLIPScore(model_name_or_path=partial(_load, path))
        except (OSError, ValueError) as e:
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise ClipError(f"clip: {path}: not a CLIP model directory or hub id ({first})") from None
        self.device = device or torch.device("cpu")
        self.metric = self.metric.to(self.device)

    @torch.no_grad()
    def score(self, source, target: torch.Tensor) -> float:
        """Mean CLIP score of `source` (captions, or uint8 images [B, H, W, 3]) against
        `target` images (uint8 [B, H, W, 3]), pair by pair."""
        self.metric.reset()
        if isinstance(source, torch.Tensor):  # torchmetrics runs CLIP where the images are
            source = list(source.to(self.device).permute(0, 3, 1, 2))
        self.metric.update(source, list(target.to(self.device).permute(0, 3, 1, 2)))
        return float(self.metric.compute())


def _load(path: str):
    from transformers import CLIPModel, CLIPProcessor

    class Clip(CLIPModel):
        """transformers 5 returns the projected embeddings as an output's `pooler_output`;
        torchmetrics 1.9 expects the tensor itself, as transformers 4 returned it."""

        def get_image_features(self, *args, **kwargs):
            return _tensor(super().get_image_features(*args, **kwargs))

        def get_text_features(self, *args, **kwargs):
            return _tensor(super().get_text_features(*args, **kwargs))

    return Clip.from_pretrained(path).eval(), CLIPProcessor.from_pretrained(path)


def _tensor(out):
    return out if isinstance(out, torch.Tensor) else out.pooler_output
