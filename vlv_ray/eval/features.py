"""Feature extractors for FID: torchmetrics' standard Inception, or one the user names.

Every extractor takes what torchmetrics' FID takes, uint8 images [B, 3, H, W], and returns
features [B, D]:

- `inception` (default): torchmetrics builds `NoTrainInceptionV3` (pool3, 2048 features,
  torch-fidelity's port of the TF-FID network and weights, images resized inside to 299 px
  bilinearly), exactly as `FrechetInceptionDistance(feature=2048)` does. torch-fidelity
  needs torchvision, so it is the optional extra `pip install 'vlv-ray[eval]'`.
- `package.module:attribute`: an nn.Module instance, class or zero-argument factory that
  returns one, imported on each Ray actor (so it must be importable there). The miniature
  world uses `vlv_ray.toyworld.reader:feature_extractor`, the attribute reader's
  penultimate layer.
"""
from __future__ import annotations

import importlib

import torch
from torch import nn

INCEPTION = "inception"


class FeatureError(ValueError):
    """A feature extractor that cannot be loaded as named."""


def load(spec: str) -> nn.Module:
    """The extractor `spec` names, in eval mode, frozen."""
    module = _inception() if spec == INCEPTION else _import(spec)
    module.requires_grad_(False)
    return module.eval()


def describe(spec: str, dim: int | None = None) -> str:
    """What a result's protocol says about its features."""
    if spec == INCEPTION:
        return ("inception-v3-compat pool3, 2048 features (torchmetrics/torch-fidelity; resized inside to 299 px, "
                "bilinear, antialiased)")
    return f"{spec}" + (f", {dim} features" if dim else "")


def _inception() -> nn.Module:
    try:
        from torchmetrics.image.fid import FrechetInceptionDistance

        return FrechetInceptionDistance(feature=2048).inception
    except (ImportError, ModuleNotFoundError, RuntimeError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise FeatureError(f"features: the standard Inception features need torch-fidelity and torchvision "
                           f"(pip install 'vlv-ray[eval]'), or name another extractor as module:attribute "
                           f"({first})") from None


def _import(spec: str) -> nn.Module:
    mod_name, _, attr = spec.partition(":")
    if not mod_name or not attr:
        raise FeatureError(f"features: got {spec!r}, expected {INCEPTION!r} or package.module:attribute naming "
                           "an nn.Module (e.g. vlv_ray.toyworld.reader:feature_extractor)")
    try:
        obj = getattr(importlib.import_module(mod_name), attr)
    except (ImportError, AttributeError) as e:
        raise FeatureError(f"features: {spec!r} cannot be imported ({e})") from None
    if isinstance(obj, type) or (callable(obj) and not isinstance(obj, nn.Module)):
        obj = obj()
    if not isinstance(obj, nn.Module):
        raise FeatureError(f"features: {spec!r} is a {type(obj).__name__}, expected an nn.Module (or a class or "
                           "factory returning one) mapping uint8 [B, 3, H, W] to features [B, D]")
    return obj


@torch.no_grad()
def extract(module: nn.Module, images_bhwc: torch.Tensor, device: torch.device | None = None) -> torch.Tensor:
    """uint8 [B, H, W, 3] (the pipeline's layout) → float32 features [B, D] on the CPU."""
    x = images_bhwc.permute(0, 3, 1, 2).contiguous()
    if device is not None:
        x = x.to(device)
    out = module(x)
    if out.ndim != 2:
        out = out.reshape(len(x), -1)
    return out.float().cpu()
