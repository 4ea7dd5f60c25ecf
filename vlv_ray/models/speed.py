"""How the models run, not what they compute: frozen-module dtype, attention kernels,
activation recompute, channels-last convolutions, torch.compile with or without CUDA
graphs, and the vision tower's input dtype (the `model.*` speed keys of a job, see
`config.ModelConfig`).

One place applies them, for training (`train/stage1.py`, `train/stage2.py`) and for
`benchmarks/bench_step.py`, so what the benchmark measures is what the jobs run.
"""
from __future__ import annotations

import torch
from torch import nn

# What `model.compile` compiles for a name: sub-modules (dotted paths) of the module that
# name maps to. The VLV encoder calls Florence's language encoder and decoder directly, not
# the language model's forward; "tower" maps to the VLV encoder, whose DaViT is compiled.
COMPILE_PARTS = {"encoder": ("encoder", "decoder"), "tower": ("florence.vision_tower",)}
# Compiled block by block ("regional" compilation): every layer of a decoder-only LM has the
# same code, so dynamo traces one and reuses it; the whole-model graph of 36 layers takes
# minutes to compile and breaks at the loss.
REGIONAL = {"llm"}
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
    "encoder" (the VLV encoder's Florence language model), "llm", "tower" (the VLV encoder:
    its input path and its vision tower). Absent names are skipped (stage 2 has no UNet);
    the job validated the names already. `compile=False` leaves torch.compile for a later
    `compile_modules` (the benchmark counts FLOPs before it).
    """
    present = {k: m for k, m in modules.items() if m is not None}
    for name, m in present.items():
        if name != "tower":  # the DaViT tower has one attention kernel; the LM ("encoder") holds the rest
            set_attention(m, model_cfg.attention)
    if "tower" in present:
        present["tower"].tower_input = model_cfg.tower_input
    for name in model_cfg.gradient_checkpointing:
        if name in present:
            _checkpoint(present[name])
    if model_cfg.channels_last:
        for name in ("unet", "vae"):
            if name in present:
                present[name].to(memory_format=torch.channels_last)
    if compile:
        compile_modules(model_cfg, present)


def compile_targets(name: str, module: nn.Module) -> list[nn.Module]:
    """The modules `model.compile=[name]` compiles inside `module` (see COMPILE_PARTS, REGIONAL)."""
    parts = [module.get_submodule(p) for p in COMPILE_PARTS.get(name, ())] or [module]
    if name in REGIONAL:
        parts = [block for part in parts for block in repeated_blocks(part)] or parts
    return parts


def repeated_blocks(module: nn.Module) -> list[nn.Module]:
    """The layers of the first ModuleList (breadth first) holding two or more modules of one class."""
    queue = [module]
    while queue:
        m = queue.pop(0)
        if isinstance(m, nn.ModuleList) and len(m) > 1 and len({type(x) for x in m}) == 1:
            return list(m)
        queue.extend(m.children())
    return []


def compile_plan(model_cfg, modules: dict[str, nn.Module | None], *, cuda: bool | None = None):
    """[(module, torch.compile mode)] for `model.compile`: those also in `model.cuda_graphs`
    get "reduce-overhead" (CUDA graphs) where `cuda` (default: a GPU is visible)."""
    present = {k: m for k, m in modules.items() if m is not None}
    cuda = torch.cuda.is_available() if cuda is None else cuda
    graphs = [n for n in model_cfg.cuda_graphs if n in present and n in model_cfg.compile]
    if graphs and not cuda:
        print(f"[vlv-ray] model.cuda_graphs={graphs}: no GPU, so no CUDA graphs; compiled without them", flush=True)
    return [(part, "reduce-overhead" if cuda and name in graphs else None)
            for name in model_cfg.compile if name in present for part in compile_targets(name, present[name])]


def compile_modules(model_cfg, modules: dict[str, nn.Module | None], *, cuda: bool | None = None) -> None:
    """torch.compile what `compile_plan` lists (apply does this last). In place
    (nn.Module.compile): parameter names, so checkpoints, are unchanged."""
    for part, mode in compile_plan(model_cfg, modules, cuda=cuda):
        part.compile(mode=mode)


def step_begin(model_cfg) -> None:
    """Call before each micro-step's forward: CUDA-graph outputs of the last step may be reused."""
    if model_cfg.cuda_graphs and torch.cuda.is_available():
        torch.compiler.cudagraph_mark_step_begin()


def stage1_modules(encoder, decoder) -> dict[str, nn.Module]:
    return {"unet": decoder.unet, "vae": decoder.vae, "text_encoder": decoder.text_encoder,
            "encoder": encoder.florence.language_model, "tower": encoder}


def stage2_modules(caption_model) -> dict[str, nn.Module]:
    return {"text_encoder": caption_model.text_encoder, "encoder": caption_model.encoder.florence.language_model,
            "llm": caption_model.captioner.llm, "tower": caption_model.encoder}
