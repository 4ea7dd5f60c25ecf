"""`vlv-ray caption`: image → VLV encoder → CLIP text → ψ → LLM → a caption that ends.

Beam search (the paper: 4 beams, up to 300 new tokens), greedy, or sampling; each
caption ends at the LLM's end-of-text token, which stage 2 learned to emit.
"""
from __future__ import annotations

import json
import sys
import time

import torch

from vlv_ray import storage
from vlv_ray.infer import images as image_inputs
from vlv_ray.models import export


def caption(ckpt: str, items: list[str], *, out: str | None = None, beams: int = 4, max_new_tokens: int = 300,
            sample: bool = False, temperature: float = 1.0, top_p: float = 1.0, seed: int = 0,
            batch_size: int = 8, progress: bool = True, **kw) -> list[dict]:
    """Caption every image; write JSONL records {"image", "caption"} to `out` when given."""
    if beams < 1:
        raise ValueError(f"beams: got {beams}, expected at least 1")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens: got {max_new_tokens}, expected at least 1")
    ckpt = export.resolve_any(ckpt, **kw)  # cheap checks first, then the model
    uris = image_inputs.expand(items, **kw)
    if out:
        storage.probe_writable(out, **kw)  # a read-only --out fails now, not after the captions
    model, meta = export.load_stage2(ckpt, **kw)
    torch.manual_seed(seed)
    records, t0 = [], time.time()
    for chunk, arrays in image_inputs.batches(uris, meta["resolution"], batch_size, **kw):
        texts = caption_batch(model, torch.from_numpy(arrays), beams=beams, max_new_tokens=max_new_tokens,
                              sample=sample, temperature=temperature, top_p=top_p)
        records += [{"image": u, "caption": t} for u, t in zip(chunk, texts)]
        if progress:
            print(f"[caption] {len(records)}/{len(uris)} images, {len(records) / (time.time() - t0):.2f} img/s",
                  file=sys.stderr, flush=True)
    if out:
        lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        storage.write_bytes_atomic(out, lines.encode(), **kw)
    return records


def caption_batch(model, images: torch.Tensor, *, beams: int = 4, max_new_tokens: int = 300, sample: bool = False,
                  temperature: float = 1.0, top_p: float = 1.0) -> list[str]:
    """uint8 [B, H, W, 3] → one caption each, with the generation settings `vlv-ray caption` takes."""
    return model.caption(images, max_new_tokens=max_new_tokens, num_beams=beams, do_sample=sample,
                         temperature=temperature, top_p=top_p)
