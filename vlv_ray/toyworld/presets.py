"""The `toy` preset, registered by the miniature world itself (`vlv_ray/registry.py` finds
this module by name when a job asks for a preset it does not know yet)."""
from __future__ import annotations

from pathlib import Path

from vlv_ray.config import ConfigError
from vlv_ray.registry import register_preset
from vlv_ray.toyworld.models import NUM_QUERIES, build_stage1, toy_captioner


def _captioner(cfg_model, *, prefix_dim: int, seed: int, empty: bool, device: str):
    return toy_captioner(prefix_dim=prefix_dim, seed=seed)  # small: built for real even when `empty`


def _validate(cfg) -> None:
    tower = cfg.model.florence
    if tower and not (str(tower).endswith(".safetensors") and Path(tower).is_file()):
        raise ConfigError(f"model.florence: got {tower!r}, expected a toy vision tower file (.safetensors, made by "
                          "python -m vlv_ray.toyworld.tower) or nothing for preset 'toy'")
    if cfg.model.num_queries > NUM_QUERIES:
        raise ConfigError(f"model.num_queries: got {cfg.model.num_queries}, expected at most {NUM_QUERIES} "
                          "for preset 'toy' (the toy teacher's CLIP context)")


register_preset("toy", build_stage1=build_stage1, build_captioner=_captioner, validate=_validate,
                describe=lambda cfg: {"all": "toy preset (vlv_ray.toyworld.models; teacher from "
                                             "model.stable_diffusion or the package; vision tower "
                                             + (f"from {cfg.model.florence})" if cfg.model.florence
                                                else "random, seeded)")})
