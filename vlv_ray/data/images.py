"""What `data prepare` does to one image: check it, and optionally bound its size.

Checks are cheap but real (see `check_image`). With `--max-short-side PX`, an image
whose shorter side exceeds PX is decoded once here, turned upright (EXIF), converted to
RGB, resized so its shorter side is PX and stored as a JPEG; every training epoch then
decodes that small JPEG instead of the full-size original. Smaller images keep their
original bytes. The original size is recorded either way.
"""
from __future__ import annotations

import io

from PIL import Image, ImageOps

from vlv_ray.data.decode import MAX_PIXELS, to_rgb

JPEG_QUALITY = 95  # paid once; well above what a 384 px training crop can tell apart


def check_image(data: bytes, min_side: int, max_aspect: float | None,
                max_pixels: int = MAX_PIXELS) -> tuple[int, int] | str:
    """(width, height) of a usable image, or the reason it is rejected.

    Cheap but real checks: JPEG is decoded at 1/8 scale (catches truncation, which
    `verify()` does not see), PNG's chunk CRCs are verified, anything else is decoded.
    """
    try:
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
            if w * h > max_pixels:
                return "bomb"
            if im.format == "JPEG":
                im.draft("RGB", (max(1, w // 8), max(1, h // 8)))
                im.load()
            elif im.format == "PNG":
                im.verify()
            else:
                im.load()
    except Image.DecompressionBombError:
        return "bomb"
    except Exception:
        return "corrupt"
    if min(w, h) < min_side:
        return "too_small"
    if max_aspect is not None and max(w / h, h / w) > max_aspect:
        return "aspect"
    return w, h


def bound_short_side(data: bytes, short_side: int) -> tuple[bytes, int, int]:
    """(bytes, width, height) with the shorter side at most `short_side`: the original bytes
    when it already is, else an upright RGB JPEG resized with Lanczos."""
    with Image.open(io.BytesIO(data)) as im:
        w, h = im.size
        if min(w, h) <= short_side:
            return data, w, h
        if im.format == "JPEG":  # DCT-scaled decode (1/2, 1/4, 1/8) to no less than the target
            scale = min(w, h) / short_side
            im.draft("RGB", (int(w / scale) + 1, int(h / scale) + 1))
        im = to_rgb(ImageOps.exif_transpose(im))
        w, h = im.size
        s = short_side / min(w, h)
        size = (max(short_side, round(w * s)), max(short_side, round(h * s)))
        out = io.BytesIO()
        im.resize(size, Image.Resampling.LANCZOS).save(out, "JPEG", quality=JPEG_QUALITY)
    return out.getvalue(), size[0], size[1]
