"""Image grids for people to look at: originals beside reconstructions.

Plain uint8 arrays in and out, no model in sight, so training (eval images) and
inference (`vlv-ray reconstruct`) share it without importing each other.
"""
from __future__ import annotations

import numpy as np
from PIL import Image


def side_by_side(originals: np.ndarray, *others: np.ndarray) -> np.ndarray:
    """One row per image: the original, then its reconstruction(s) (uint8 [n·res, k·res, 3])."""
    res = originals.shape[1]
    return np.concatenate([np.concatenate([o, *(fit(x, res) for x in xs)], axis=1)
                           for o, *xs in zip(originals, *others)], axis=0)


def fit(image: np.ndarray, res: int) -> np.ndarray:
    """The decoder's output at the original's size (the VAE may decode at another one)."""
    if image.shape[:2] == (res, res):
        return image
    return np.asarray(Image.fromarray(image).resize((res, res), Image.Resampling.BICUBIC))
