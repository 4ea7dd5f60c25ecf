"""Small deterministic images with coloured shapes, for the demo and tests.

Until the miniature world lands, this is the image source that needs no download.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

from PIL import Image, ImageDraw

COLOURS = {"red": (220, 40, 40), "green": (40, 180, 70), "blue": (40, 80, 220),
           "yellow": (235, 210, 40), "purple": (140, 60, 180), "white": (245, 245, 245)}
SHAPES = ("circle", "square", "triangle")


def draw(rng: random.Random, size: tuple[int, int]) -> tuple[Image.Image, str]:
    """A dark background with 1-3 shapes, and its caption; colour, shape, size and place
    all come from `rng`."""
    w, h = size
    im = Image.new("RGB", size, tuple(rng.randrange(0, 90) for _ in range(3)))
    d = ImageDraw.Draw(im)
    things = []
    for _ in range(rng.randint(1, 3)):
        name = rng.choice(list(COLOURS))
        colour = COLOURS[name]
        r = rng.randint(min(w, h) // 8, min(w, h) // 3)
        cx, cy = rng.randint(r, w - r), rng.randint(r, h - r)
        shape = rng.choice(SHAPES)
        things.append(f"a {'large' if r > min(w, h) // 4 else 'small'} {name} {shape}")
        if shape == "circle":
            d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=colour)
        elif shape == "square":
            d.rectangle((cx - r, cy - r, cx + r, cy + r), fill=colour)
        else:
            d.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=colour)
    return im, " and ".join(things) + " on a dark background"


def write_images(folder: str | Path, n: int, size: tuple[int, int] = (48, 40), seed: int = 0,
                 corrupt: int = 0, captions: str | Path | None = None) -> list[Path]:
    """n images (png and jpg alternating) plus `corrupt` garbage files with image names.

    `captions`: also write a JSONL file of {"key", "caption"} describing each image.

    The same (n, size, seed) always gives the same files (byte for byte under one Pillow version).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    paths, lines = [], []
    for i in range(n):
        ext = ".png" if i % 2 == 0 else ".jpg"
        p = folder / f"img-{i:05d}{ext}"
        im, text = draw(rng, size)
        lines.append(json.dumps({"key": p.stem, "caption": text}) + "\n")
        if ext == ".jpg":
            im.save(p, quality=92)
        else:
            im.save(p)
        paths.append(p)
    for j in range(corrupt):
        p = folder / f"broken-{j:03d}.jpg"
        p.write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg " + bytes(rng.randrange(256) for _ in range(64)))
        paths.append(p)
    if captions is not None:
        Path(captions).write_text("".join(lines))
    return paths
