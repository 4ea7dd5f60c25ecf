"""`vlv-ray reconstruct`: image → VLV encoder → caption embeddings → SD sampling → image.

What stage 1 learned, made visible: each original beside its reconstruction from the 77
caption embeddings alone, sampled with classifier-free guidance (unconditional = SD's
encoding of the empty prompt).
"""
from __future__ import annotations

import io
import sys
import time

import numpy as np
import torch
from PIL import Image

from vlv_ray import storage
from vlv_ray.grid import side_by_side
from vlv_ray.infer import images as image_inputs
from vlv_ray.models import export


def reconstruct(ckpt: str, items: list[str], *, out: str, steps: int = 50, guidance: float = 2.0,
                seed: int = 0, scheduler: str | None = None, batch_size: int = 8, progress: bool = True,
                **kw) -> dict:
    """Write a grid (original | reconstruction, one row per image) to `out`; return a summary."""
    if steps < 1:
        raise ValueError(f"steps: got {steps}, expected at least 1")
    ckpt = export.resolve(ckpt, **kw)  # cheap checks first, then the model
    uris = image_inputs.expand(items, **kw)
    storage.probe_writable(out, **kw)  # a read-only --out fails now, not after the sampling
    encoder, decoder, meta = export.load_stage1(ckpt, **kw)
    res = meta["resolution"]
    tokenizer = sd_tokenizer(meta.get("stable_diffusion"))
    generator = torch.Generator().manual_seed(seed)
    rows, done, t0 = [], 0, time.time()
    for chunk, arrays in image_inputs.batches(uris, res, batch_size, **kw):
        recon = reconstruct_batch(encoder, decoder, torch.from_numpy(arrays), tokenizer=tokenizer, steps=steps,
                                  guidance=guidance, scheduler=scheduler, generator=generator, resolution=res)
        rows.append(side_by_side(arrays, recon.numpy()))
        done += len(chunk)
        if progress:
            print(f"[reconstruct] {done}/{len(uris)} images, {done / (time.time() - t0):.2f} img/s",
                  file=sys.stderr, flush=True)
    buf = io.BytesIO()
    Image.fromarray(np.concatenate(rows, axis=0)).save(buf, "PNG")
    storage.write_bytes_atomic(out, buf.getvalue(), **kw)
    return {"out": out, "images": len(uris), "resolution": res, "steps": steps, "guidance": guidance,
            "seed": seed, "scheduler": scheduler or "DDIMScheduler", "step": meta["step"]}


@torch.no_grad()
def reconstruct_batch(encoder, decoder, images: torch.Tensor, *, tokenizer=None, steps: int, guidance: float,
                      scheduler: str | None = None, generator: torch.Generator | None = None,
                      resolution: int | None = None) -> torch.Tensor:
    """uint8 [B, H, W, 3] (on the encoder's device) → reconstructions, uint8 [B, h, w, 3] on the CPU:
    caption embeddings → the frozen decoder's CFG sampling (unconditional: the empty prompt)."""
    cond = decoder.condition(encoder(images))
    uncond = decoder.empty_prompt(len(images), tokenizer, positions=cond.shape[1])
    return decoder.sample(cond, uncond, steps=steps, guidance=guidance, scheduler=scheduler, generator=generator,
                          resolution=resolution)


def sd_tokenizer(sd_path: str | None):
    if not sd_path:
        return None  # tiny preset: the empty prompt's ids come from the text config
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(sd_path, subfolder="tokenizer")
