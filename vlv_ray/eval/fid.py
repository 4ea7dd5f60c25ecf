"""FID from running feature statistics: torchmetrics' FrechetInceptionDistance, fed features.

The extractor runs where the images are (the Ray Data actors, or this process for the
miniature world); this side only keeps torchmetrics' running sums (Σx, Σxxᵀ, n, in float64)
for the real and the generated set, so memory is two D×D matrices per score whatever the
image count (2048² × 8 B × 2 = 64 MiB for Inception at 30K images or 30M). The Fréchet
distance itself is torchmetrics' `_compute_fid`, not ours.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn


class Precomputed(nn.Module):
    """The "extractor" of a metric fed features: returns its input. `num_features` tells
    torchmetrics the width without a dummy forward pass."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


class FeatureFID:
    """FID between two sets seen as batches of features ([n, D] each), in bounded memory."""

    def __init__(self, num_features: int):
        from torchmetrics.image.fid import FrechetInceptionDistance

        self.num_features = num_features
        self.metric = FrechetInceptionDistance(feature=Precomputed(num_features), reset_real_features=False)

    def update(self, features: np.ndarray | torch.Tensor, *, real: bool) -> None:
        x = torch.as_tensor(np.ascontiguousarray(features, dtype=np.float64))
        if x.ndim != 2 or x.shape[1] != self.num_features:
            raise ValueError(f"features: got shape {tuple(x.shape)}, expected [n, {self.num_features}]")
        if len(x):
            self.metric.update(x, real=real)

    def counts(self) -> tuple[int, int]:
        m = self.metric
        return int(m.real_features_num_samples), int(m.fake_features_num_samples)

    def compute(self) -> float:
        """The FID; under torch.distributed, of every rank's images (torchmetrics sums the states first)."""
        try:
            return float(self.metric.compute())
        except RuntimeError as e:
            if "More than one sample is required" not in str(e):
                raise
            real, fake = self.counts()
            raise ValueError(f"FID needs at least 2 images on each side, got {real} real and {fake} "
                             "generated") from None


def fid(real: np.ndarray, fake: np.ndarray) -> float:
    """FID of two feature sets held in memory ([n, D], [m, D])."""
    f = FeatureFID(np.asarray(real).shape[1])
    f.update(real, real=True)
    f.update(fake, real=False)
    return f.compute()


def fid_of_images(real: np.ndarray, fake: np.ndarray, features: str, *, batch: int = 256) -> tuple[float, int]:
    """(FID, feature width) of two uint8 image sets [n, H, W, 3] held in this process, with the
    extractor `features` names (eval/features.py): the in-process twin of the Ray path, for
    sets small enough to hold (the miniature world's held-out images)."""
    from vlv_ray.eval import features as feature_lib

    extractor = feature_lib.load(features)
    stats: FeatureFID | None = None
    for is_real, images in ((True, real), (False, fake)):
        for i in range(0, len(images), batch):
            x = feature_lib.extract(extractor, torch.from_numpy(np.ascontiguousarray(images[i:i + batch])))
            stats = stats or FeatureFID(x.shape[1])
            stats.update(x, real=is_real)
    if stats is None:
        raise ValueError("real, fake: no images")
    return stats.compute(), stats.num_features
