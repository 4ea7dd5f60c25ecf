"""The model-preset registry: a preset names how to build stage 1's (trainable encoder, frozen
decoder), stage 2's captioner, what a job using it must say, and where its configs come from.

Each package registers its own presets in its `presets` module (`vlv_ray/models/presets.py`:
tiny, paper; `vlv_ray/toyworld/presets.py`: toy); a package outside vlv-ray names its module
in the `vlv_ray.presets` entry-point group. Nothing here names a package, so adding a family
edits no shared file; and since this module imports no models, `config.py` validates a
job's preset through it without pulling torch in.
"""
from __future__ import annotations

from dataclasses import dataclass
from importlib import metadata
from typing import Any, Callable

ENTRY_POINT_GROUP = "vlv_ray.presets"  # packages outside vlv-ray: a module that calls register_preset


class ModelBuildError(ValueError):
    """A model that cannot be built as asked (an unknown preset, a missing model path)."""


def _no_checks(cfg) -> None:
    pass


@dataclass(frozen=True)
class Preset:
    """How to build one family of models. Every builder takes keywords only."""

    name: str
    # (*, num_queries, resolution, florence_path, sd_path, train_vision_tower, seed, empty, device)
    #   → (VLVEncoder, FrozenDiffusion); `empty`: from configs alone, on `device`.
    build_stage1: Callable[..., tuple]
    # (model_cfg, *, prefix_dim, seed, empty, device) → Captioner; model_cfg has preset, llm, train_encoder.
    build_captioner: Callable[..., Any]
    # job → {model: where its config comes from}, for `param_counts`.
    describe: Callable[[Any], dict[str, str]]
    # job → None, or ConfigError naming the key (run by `JobConfig.validate`, after its own checks).
    validate: Callable[[Any], None] = _no_checks


_PRESETS: dict[str, Preset] = {}


def register_preset(name: str, *, build_stage1: Callable, build_captioner: Callable, describe: Callable,
                    validate: Callable | None = None) -> Preset:
    """Add a preset under `name` (a package's own module calls this when it is imported)."""
    known = _PRESETS.get(name)
    if known is not None and known.build_stage1.__module__ != build_stage1.__module__:
        raise ValueError(f"preset {name!r}: already registered by {known.build_stage1.__module__}")
    preset = Preset(name, build_stage1, build_captioner, describe, validate or _no_checks)
    _PRESETS[name] = preset
    return preset


def _discover() -> None:
    """Import every `vlv_ray/<package>/presets.py` and every entry point of ENTRY_POINT_GROUP:
    each module registers its presets on import. Found by file name rather than through the
    installed metadata alone, which a stale `*.egg-info` in a checkout can hide, and which
    a `ray job submit` working directory does not carry."""
    import importlib
    from pathlib import Path

    import vlv_ray

    for root in vlv_ray.__path__:
        for module in sorted(Path(root).glob("*/presets.py")):
            importlib.import_module(f"vlv_ray.{module.parent.name}.presets")
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name not in _PRESETS:
            ep.load()


def preset_names() -> list[str]:
    _discover()
    return list(_PRESETS)


def get_preset(name: str) -> Preset:
    """The preset registered as `name`; ModelBuildError naming model.preset if none is."""
    if name not in _PRESETS:
        _discover()
    if name not in _PRESETS:
        raise ModelBuildError(f"model.preset: got {name!r}, expected one of {', '.join(preset_names())}")
    return _PRESETS[name]
