"""Decode + resize + centre-crop throughput: our path vs the reference path, one process.

Images: LAION-like JPEGs (1024–2048 px on the long side, quality 90) generated here.
Reference path (as in the public VLV code): PIL open → convert RGB (full decode) →
resize shorter side to 384 → centre crop → float tensor. Ours: `vlv_ray.data.decode`
(reduced-size JPEG decode via draft, exact resize, crop, uint8). Both on one core.
Prints one JSON line.
"""
from __future__ import annotations

import io
import json
import os
import time

import numpy as np
import torch
from PIL import Image

from vlv_ray.data.decode import decode_image

RES = 384


def make_images(n: int, seed: int = 0, min_short: int = 0) -> list[bytes]:
    """Long side 1024–2048, aspect 0.6–1.6; with min_short, the shorter side is at least that."""
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < n:
        long_side = int(rng.integers(1024, 2049))
        aspect = float(rng.uniform(0.6, 1.6))
        w, h = (long_side, int(long_side / aspect)) if aspect >= 1 else (int(long_side * aspect), long_side)
        if min(w, h) < min_short:
            continue
        # Smooth structure + fine noise: JPEG sizes like photos (~0.3–1 MB), not flat colour.
        base = rng.integers(0, 255, (h // 32 + 1, w // 32 + 1, 3), dtype=np.uint8)
        im = Image.fromarray(base).resize((w, h), Image.Resampling.BICUBIC)
        arr = np.asarray(im).astype(np.int16) + rng.integers(-12, 13, (h, w, 3), dtype=np.int16)
        buf = io.BytesIO()
        Image.fromarray(arr.clip(0, 255).astype(np.uint8)).save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def reference(data: bytes) -> torch.Tensor:
    im = Image.open(io.BytesIO(data)).convert("RGB")
    w, h = im.size
    s = RES / min(w, h)
    im = im.resize((max(RES, round(w * s)), max(RES, round(h * s))), Image.Resampling.BILINEAR)
    left, top = (im.width - RES) // 2, (im.height - RES) // 2
    im = im.crop((left, top, left + RES, top + RES))
    return torch.from_numpy(np.asarray(im, dtype=np.float32) / 255.0).permute(2, 0, 1)


def ours(data: bytes) -> np.ndarray:
    return decode_image(data, RES)


def rate(fn, images: list[bytes], repeats: int = 2) -> float:
    best = 0.0
    for _ in range(repeats):
        t = time.perf_counter()
        for d in images:
            fn(d)
        best = max(best, len(images) / (time.perf_counter() - t))
    return best


def main() -> None:
    torch.set_num_threads(1)
    n = int(os.environ.get("BENCH_IMAGES", "40"))
    result = {"bench": "decode_resize_crop", "resolution": RES, "images_per_set": n, "target_ratio": 3.0}
    # "mixed": shorter side 614–2048 (LAION-aesthetic-like after a >512 filter);
    # "large": both sides >= 1024, where reduced-size JPEG decoding always applies.
    for name, min_short in (("mixed", 0), ("large", 1024)):
        images = make_images(n, seed=1 + min_short, min_short=min_short)
        ref, new = rate(reference, images), rate(ours, images)
        result[name] = {"mean_jpeg_kb": round(sum(map(len, images)) / n / 1024, 1),
                        "ours_img_per_s_per_core": round(new, 1), "reference_img_per_s_per_core": round(ref, 1),
                        "ratio": round(new / ref, 2)}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
