"""How the models run, not what they compute: frozen-module dtype, attention kernels,
activation recompute, channels-last convolutions and torch.compile (the `model.*` speed
keys of a job, see `config.ModelConfig`).

One place applies them, for training (`train/stage1.py`, `train/stage2.py`) and for
`benchmarks/bench_step.py`, so what the benchmark measures is what the jobs run.
"""
from __future__ import annotations

import torch
from torch import nn

COMPILE_PARTS = {"encoder": ("encoder", "decoder")}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def frozen_dtype(model_cfg, precision: str) -> torch.dtype:
    """The dtype of the frozen modules: `model.frozen_dtype`, or the compute precision for auto."""
    key = precision if model_cfg.frozen_dtype == "auto" else model_cfg.frozen_dtype
    return DTYPES[key]


def set_attention(module: nn.Module, kind: str) -> None:
    """Every transformers / diffusers model inside `module` uses `kind` attention.

    sdpa: `scaled_dot_product_attention` (flash or memory-efficient kernels where the
    device and dtype allow); eager: the explicit softmax(QKᵀ)V the papers write down.
    """
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0
    from transformers import PreTrainedModel

    done: set[int] = set()
    for m in module.modules():
        if id(m) in done:
            continue
        if isinstance(m, PreTrainedModel):
            m.set_attn_implementation(kind)
            done.update(id(x) for x in m.modules())  # one call covers its sub-models
        elif hasattr(m, "set_attn_processor") and hasattr(m, "attn_processors"):  # diffusers UNet / VAE
            m.set_attn_processor(AttnProcessor2_0() if kind == "sdpa" else AttnProcessor())
            done.update(id(x) for x in m.modules())


def _checkpoint(module: nn.Module) -> None:
    if hasattr(module, "enable_gradient_checkpointing"):  # diffusers
        module.enable_gradient_checkpointing()
    else:  # transformers: recompute layer by layer (non-reentrant: frozen inputs are fine)
        module.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})


def apply(model_cfg, modules: dict[str, nn.Module | None], *, compile: bool = True) -> None:
    """Apply the job's speed keys to named modules: "unet", "vae", "text_encoder",
    "encoder" (the VLV encoder's Florence language model), "llm". Absent names are skipped
    (stage 2 has no UNet); the job validated the names already. `compile=False` leaves
    torch.compile for a later `compile_modules` (the benchmark counts FLOPs before it).
    """
    present = {k: m for k, m in modules.items() if m is not None}
    for m in present.values():
        set_attention(m, model_cfg.attention)
    for name in model_cfg.gradient_checkpointing:
        if name in present:
            _checkpoint(present[name])
    if model_cfg.channels_last:
        for name in ("unet", "vae"):
            if name in present:
                present[name].to(memory_format=torch.channels_last)
    if compile:
        compile_modules(model_cfg, present)


def compile_modules(model_cfg, modules: dict[str, nn.Module | None]) -> None:
    """torch.compile the modules `model.compile` names (apply does this last)."""
    present = {k: m for k, m in modules.items() if m is not None}
    for name in model_cfg.compile:
        if name in present:
            # In place (nn.Module.compile): parameter names, so checkpoints, are unchanged. The
            # VLV encoder calls Florence's language encoder and decoder directly, not the
            # model's forward, so those two are what is compiled.
            for part in [getattr(present[name], p) for p in COMPILE_PARTS.get(name, ())] or [present[name]]:
                part.compile()


def stage1_modules(encoder, decoder) -> dict[str, nn.Module]:
    return {"unet": decoder.unet, "vae": decoder.vae, "text_encoder": decoder.text_encoder,
            "encoder": encoder.florence.language_model}


def stage2_modules(caption_model) -> dict[str, nn.Module]:
    return {"text_encoder": caption_model.text_encoder, "encoder": caption_model.encoder.florence.language_model,
            "llm": caption_model.captioner.llm}
