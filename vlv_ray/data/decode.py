"""CPU image decode for the training stream: bytes → RGB uint8 [res, res, 3].

Fast path for large JPEGs: PIL's `draft` asks libjpeg to decode at 1/2, 1/4 or 1/8
scale (DCT scaling), so a 2048 px photo headed for 384 px costs a fraction of a full
decode. Then EXIF orientation, any mode to RGB, an exact resize of the shorter side and a
centre crop. A row that cannot be used raises `BadImage`; callers drop and count it.

Reasons are short strings: "corrupt" (cannot be decoded) and "bomb" (more pixels than
`max_pixels`, or than PIL's own guard, 2 x `Image.MAX_IMAGE_PIXELS`; the lower wins).
Too-small and odd-aspect images are filtered once, at `data prepare`, not per epoch here.
"""
from __future__ import annotations

import io
from typing import Any

import numpy as np
from PIL import Image, ImageOps

MAX_PIXELS = 1 << 28  # ~268 MP: anything larger is refused as a decompression bomb


class BadImage(ValueError):
    """An image row that cannot be used; `reason` is what gets counted."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def to_rgb(im: Image.Image) -> Image.Image:
    if im.mode == "RGB":
        return im
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        bg = Image.new("RGBA", im.size, (255, 255, 255, 255))  # composite on white, not black
        return Image.alpha_composite(bg, im).convert("RGB")
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(im, dtype=np.float64)
        hi = arr.max() or 1.0
        return Image.fromarray((arr * (255.0 / hi)).round().astype(np.uint8)).convert("RGB")
    return im.convert("RGB")


def decode_image(data: bytes, resolution: int, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Encoded image → RGB uint8 [resolution, resolution, 3]: shorter side resized, centre crop."""
    try:
        im = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError:
        raise BadImage("bomb") from None
    except Exception:
        raise BadImage("corrupt") from None
    w, h = im.size
    if w * h > max_pixels:
        raise BadImage("bomb")
    try:
        # Reduced-size JPEG decode; the exact resize below still lands on `resolution`.
        if im.format == "JPEG" and min(w, h) >= 2 * resolution:
            scale = min(w, h) / resolution
            im.draft("RGB", (int(w / scale * 1.0001) + 1, int(h / scale * 1.0001) + 1))
        try:
            im = ImageOps.exif_transpose(im)
        except Exception:
            im.load()  # a malformed EXIF block: keep the pixels, unrotated, rather than lose the row
        im = to_rgb(im)
        w, h = im.size
        # Resize only the centre square (resize's `box`): cropping first saves the work
        # of resampling pixels that the crop would throw away. Bilinear with Pillow's
        # antialiasing, as torchvision's Resize and diffusers' training scripts use;
        # bicubic cost 15% more per image for no visible gain at ≤2× reduction.
        side = min(w, h)
        left, top = (w - side) / 2, (h - side) / 2
        im = im.resize((resolution, resolution), Image.Resampling.BILINEAR,
                       box=(left, top, left + side, top + side),
                       reducing_gap=2.0 if side >= 2 * resolution else None)
        arr = np.asarray(im, dtype=np.uint8)
    except BadImage:
        raise
    except Exception:
        raise BadImage("corrupt") from None
    if arr.shape != (resolution, resolution, 3):
        raise BadImage("corrupt")
    return arr


def decode_batch(batch: dict[str, Any], resolution: int) -> tuple[dict[str, np.ndarray], list[tuple[str, str]]]:
    """Decode a Ray Data numpy batch; return (good rows, [(key, reason) of dropped rows])."""
    keys, images = batch["key"], batch["image"]
    keep: list[int] = []
    out: list[np.ndarray] = []
    rejects: list[tuple[str, str]] = []
    for i, (key, data) in enumerate(zip(keys, images)):
        try:
            out.append(decode_image(bytes(data), resolution))
            keep.append(i)
        except BadImage as e:
            rejects.append((str(key), e.reason))
    good = {"key": np.asarray([str(keys[i]) for i in keep], dtype=object),
            "image": np.stack(out) if out else np.zeros((0, resolution, resolution, 3), np.uint8)}
    idx = np.asarray(keep, dtype=np.int64)
    for col in batch:
        if col not in ("key", "image"):  # caption etc. ride along, dtype kept
            good[col] = np.asarray(batch[col])[idx]
    return good, rejects
