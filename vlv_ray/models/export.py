"""Exports: what a finished stage leaves for the next stage and for inference.

A stage-1 export is a directory

    <run>/export/stage1/
      vlv.json                 what to build: preset, queries, resolution, seed, base weights
      trainable.safetensors    the trained weights (encoder language model, queries, MLP)

loaded with one call, `load_stage1(uri)`. The frozen parts (Florence's vision tower, the
SD decoder) come from the base weights named in `vlv.json`, as during training. Loading
is strict: the file must hold exactly the parameters that the build marks trainable, no
more and no fewer, or the error lists the difference.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from vlv_ray import storage

META_FILE, WEIGHTS_FILE = "vlv.json", "trainable.safetensors"


class ExportError(ValueError):
    """An export that cannot be loaded as asked, named in the message."""


def load_strict(module: torch.nn.Module, tensors: dict[str, torch.Tensor], source: str,
                names: set[str] | None = None) -> None:
    """Copy `tensors` into `module`'s parameters named `names` (default: all trainable ones).

    Any missing or unexpected key, or a shape that differs, is an error listing them.
    """
    params = dict(module.named_parameters())
    names = names if names is not None else {n for n, p in params.items() if p.requires_grad}
    missing, unexpected = sorted(names - set(tensors)), sorted(set(tensors) - names)
    shapes = sorted(f"{k}: file {tuple(tensors[k].shape)}, model {tuple(params[k].shape)}"
                    for k in names & set(tensors) if tuple(tensors[k].shape) != tuple(params[k].shape))
    if missing or unexpected or shapes:
        parts = [f"missing keys {_head(missing)}" if missing else "",
                 f"unexpected keys {_head(unexpected)}" if unexpected else "",
                 f"shape mismatches {_head(shapes)}" if shapes else ""]
        raise ExportError(f"{source}: does not match the model: " + "; ".join(p for p in parts if p))
    with torch.no_grad():
        for k in names:
            params[k].copy_(tensors[k].to(params[k].dtype))


def _head(items: list[str], n: int = 8) -> str:
    more = f" … and {len(items) - n} more" if len(items) > n else ""
    return ", ".join(items[:n]) + more


def stage1_meta(cfg, state: dict[str, Any]) -> dict[str, Any]:
    m = cfg.model
    return {"kind": "vlv-stage1", "preset": m.preset, "num_queries": m.num_queries,
            "resolution": cfg.data.resolution, "seed": cfg.seed, "florence": m.florence,
            "stable_diffusion": m.stable_diffusion, "train_vision_tower": m.train_vision_tower,
            "step": state["step"], "config_hash": state["config_hash"], "job": cfg.name}


def save(out_uri: str, tensors: dict[str, torch.Tensor], meta: dict[str, Any], **kw) -> str:
    from safetensors.torch import save as st_save

    # clone: tied weights share storage, which safetensors refuses to write twice
    tensors = {k: v.detach().float().clone().contiguous() for k, v in tensors.items()}
    storage.write_bytes_atomic(storage.join(out_uri, WEIGHTS_FILE),
                               st_save(tensors, metadata={"step": str(meta["step"])}), **kw)
    storage.write_json_atomic(storage.join(out_uri, META_FILE), meta, **kw)  # last: the export is whole
    return out_uri


def resolve(uri: str, **kw) -> str:
    """An export directory, or a run directory holding `export/stage1`."""
    for candidate in (uri, storage.join(uri, "export", "stage1")):
        if storage.exists(storage.join(candidate, META_FILE), **kw):
            return candidate
    raise ExportError(f"{uri}: not a vlv-ray export (no {META_FILE} here or under export/stage1/)")


def read(uri: str, **kw) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    from safetensors.torch import load as st_load

    uri = resolve_any(uri, **kw)
    try:
        meta = storage.read_json(storage.join(uri, META_FILE), **kw)
    except storage.NotJSON as e:
        raise ExportError(f"{e}; the export is damaged, export again") from None
    try:
        data = storage.read_bytes(storage.join(uri, WEIGHTS_FILE), **kw)
    except FileNotFoundError:
        raise ExportError(f"{uri}: {WEIGHTS_FILE} is missing") from None
    try:
        tensors = st_load(data)
    except Exception as e:  # safetensors raises its own SafetensorError for a cut-off file
        raise ExportError(f"{uri}/{WEIGHTS_FILE}: not a readable safetensors file ({len(data)} bytes; "
                          f"{str(e).splitlines()[0] if str(e) else type(e).__name__}): truncated or damaged, "
                          "export again") from None
    return meta, tensors


def load_stage1(uri: str, **kw):
    """(encoder, decoder, meta) from a stage-1 export: one call, strict."""
    from vlv_ray.models.presets import build_stage1

    uri = resolve(uri, **kw)
    meta, tensors = read(uri, **kw)
    if meta.get("kind") != "vlv-stage1":
        raise ExportError(f"{uri}: a {meta.get('kind')!r} export, expected a stage-1 (vlv-stage1) export")
    encoder, decoder = build_stage1(
        meta["preset"], num_queries=meta["num_queries"], resolution=meta["resolution"],
        florence_path=meta.get("florence"), sd_path=meta.get("stable_diffusion"),
        train_vision_tower=meta.get("train_vision_tower", False), seed=meta.get("seed", 0))
    load_strict(encoder, tensors, f"{uri}/{WEIGHTS_FILE}")
    return encoder.eval(), decoder, meta


def stage2_meta(cfg, state: dict[str, Any]) -> dict[str, Any]:
    m = cfg.model
    stage1 = m.stage1 if "://" in m.stage1 else str(Path(m.stage1).expanduser().resolve())
    return {"kind": "vlv-stage2", "preset": m.preset, "llm": m.llm, "stage1": stage1,
            "train_encoder": m.train_encoder, "max_caption_tokens": m.max_caption_tokens,
            "resolution": cfg.data.resolution, "seed": cfg.seed,
            "step": state["step"], "config_hash": state["config_hash"], "job": cfg.name}


def load_stage2(uri: str, **kw):
    """(CaptionModel, meta) from a stage-2 export: one call, strict.

    The encoder's frozen parts come from the stage-1 export the run started from
    (`stage1` in vlv.json); everything stage 2 trained comes from this export.
    """
    from types import SimpleNamespace

    from vlv_ray.models.caption_model import build_caption_model

    meta, tensors = read(uri, **kw)
    if meta.get("kind") != "vlv-stage2":
        raise ExportError(f"{uri}: a {meta.get('kind')!r} export, expected a stage-2 (vlv-stage2) export")
    encoder, decoder, _ = load_stage1(meta["stage1"], **kw)
    model = build_caption_model(SimpleNamespace(preset=meta["preset"], llm=meta.get("llm"),
                                                train_encoder=meta["train_encoder"]),
                                encoder, decoder.text_encoder, seed=meta.get("seed", 0))
    load_strict(model, tensors, f"{resolve_any(uri, **kw)}/{WEIGHTS_FILE}")
    return model.eval(), meta


def resolve_any(uri: str, **kw) -> str:
    """An export directory, or a run directory holding export/stage2 or export/stage1."""
    for candidate in (uri, storage.join(uri, "export", "stage2"), storage.join(uri, "export", "stage1")):
        if storage.exists(storage.join(candidate, META_FILE), **kw):
            return candidate
    raise ExportError(f"{uri}: not a vlv-ray export (no {META_FILE} here or under export/stage2/ or export/stage1/)")
