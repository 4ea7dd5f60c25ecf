"""The miniature world: captioned 32 px images from a seed, and captions back to attributes.

Five attributes, each named in the caption by a fixed grammar:

    "<count> <size> <colour> <shape>[s] at the <vertical> <horizontal>"
    e.g. "two small red circles at the top left", "one large blue square at the bottom right"

The background is a random dull colour with a vertical gradient and faint noise, never
named in the caption, so a model cannot read the answer off a constant backdrop and a
reconstruction has something besides the shapes to get right. Everything is a pure
function of (seed, index): any image can be regenerated alone, and held-out images come
from another seed.
"""
from __future__ import annotations

import json
import random
import re
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SIZE = 32  # pixels; 4 quadrants of 16
COLOURS = {"red": (225, 45, 45), "green": (50, 200, 70), "blue": (55, 95, 235), "yellow": (240, 215, 45)}
SHAPES = ("circle", "square", "triangle")
SIZES = {"small": 3, "large": 5}  # half-width in pixels
COUNTS = ("one", "two")
VERTICAL = ("top", "bottom")
HORIZONTAL = ("left", "right")
POSITIONS = tuple(f"{v} {h}" for v in VERTICAL for h in HORIZONTAL)
# Attribute name → its values, in a fixed order (the reader's class indices).
ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "count": COUNTS, "size": tuple(SIZES), "colour": tuple(COLOURS), "shape": SHAPES, "position": POSITIONS,
}
WORDS = tuple(dict.fromkeys(
    list(COUNTS) + list(SIZES) + list(COLOURS) + [w for s in SHAPES for w in (s, s + "s")]
    + ["at", "the"] + list(VERTICAL) + list(HORIZONTAL)))


def sample_attributes(rng: random.Random) -> dict[str, str]:
    return {name: rng.choice(values) for name, values in ATTRIBUTES.items()}


def caption_of(a: dict[str, str]) -> str:
    plural = "s" if a["count"] == "two" else ""
    return f"{a['count']} {a['size']} {a['colour']} {a['shape']}{plural} at the {a['position']}"


_CAPTION = re.compile(
    r"^\s*(?P<count>one|two)\s+(?P<size>small|large)\s+(?P<colour>\w+)\s+(?P<shape>circle|square|triangle)s?"
    r"\s+at\s+the\s+(?P<position>(?:top|bottom)\s+(?:left|right))\s*$")


def parse_caption(text: str) -> dict[str, str | None]:
    """Attributes named in a caption; an attribute the text does not state clearly is None.

    A caption that breaks the grammar is still read word by word (the first word naming a
    value of an attribute wins), so a caption wrong in one place still scores the others.
    """
    m = _CAPTION.match(text.lower())
    if m and m["colour"] in COLOURS:
        return {k: " ".join(m[k].split()) for k in ATTRIBUTES}
    words = text.lower().split()
    out: dict[str, str | None] = {}
    for name, values in ATTRIBUTES.items():
        if name == "position":
            v = next((w for w in words if w in VERTICAL), None)
            h = next((w for w in words if w in HORIZONTAL), None)
            out[name] = f"{v} {h}" if v and h else None
        elif name == "shape":
            out[name] = next((w.rstrip("s") for w in words if w.rstrip("s") in SHAPES), None)
        else:
            out[name] = next((w for w in words if w in values), None)
    return out


def _background(rng: random.Random) -> np.ndarray:
    base = np.array([rng.randrange(25, 120) for _ in range(3)], dtype=np.float32)
    tilt = np.array([rng.uniform(-30, 30) for _ in range(3)], dtype=np.float32)
    ramp = np.linspace(-0.5, 0.5, SIZE, dtype=np.float32)[:, None, None] * tilt
    noise = np.random.default_rng(rng.randrange(2**32)).normal(0, 2, (SIZE, SIZE, 3)).astype(np.float32)
    return np.clip(base + ramp + noise, 0, 255).astype(np.uint8)


def _draw_shape(d: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: int, colour) -> None:
    box = (cx - r, cy - r, cx + r - 1, cy + r - 1)
    if shape == "circle":
        d.ellipse(box, fill=colour)
    elif shape == "square":
        d.rectangle(box, fill=colour)
    else:
        d.polygon([(cx - 0.5, cy - r), (cx - r, cy + r - 1), (cx + r - 1, cy + r - 1)], fill=colour)


def render(a: dict[str, str], rng: random.Random) -> Image.Image:
    """The image of attributes `a`; `rng` places the shapes (jitter) and draws the background."""
    im = Image.fromarray(_background(rng))
    d = ImageDraw.Draw(im)
    r = SIZES[a["size"]]
    vertical, horizontal = a["position"].split()
    qx = SIZE // 4 if horizontal == "left" else 3 * SIZE // 4
    qy = SIZE // 4 if vertical == "top" else 3 * SIZE // 4
    cx, cy = qx + rng.randint(-1, 1), qy + rng.randint(-2, 2)
    offsets = (0,) if a["count"] == "one" else (-r - 0.5, r + 0.5)  # two: side by side, 1 px apart
    if a["count"] == "two":  # keep both inside the frame; the pair's centre stays in its half
        cx = min(max(cx, 2 * r + 1), SIZE - 2 * r - 1)
    cy = min(max(cy, r), SIZE - r)
    for dx in offsets:
        _draw_shape(d, a["shape"], cx + dx, cy, r, COLOURS[a["colour"]])
    return im


def example(seed: int, index: int) -> tuple[Image.Image, dict[str, str]]:
    """Image `index` of the world drawn with `seed`: (image, attributes)."""
    rng = random.Random(seed * 1_000_003 + index)
    a = sample_attributes(rng)
    return render(a, rng), a


def arrays(seed: int, n: int, start: int = 0) -> tuple[np.ndarray, list[dict[str, str]]]:
    """(uint8 [n, 32, 32, 3], attributes) for images start … start+n-1 of a seed, in memory."""
    ims, attrs = [], []
    for i in range(start, start + n):
        im, a = example(seed, i)
        ims.append(np.asarray(im))
        attrs.append(a)
    return np.stack(ims), attrs


def write_folder(folder: str | Path, seed: int, n: int, *, start: int = 0) -> Path:
    """PNG files plus `captions.jsonl` ({key, caption}) and `attributes.jsonl` ({key, **attrs})
    in `folder`: the input of `vlv-ray data prepare FOLDER DEST --captions FOLDER/captions.jsonl`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    caps, atts = [], []
    for i in range(start, start + n):
        im, a = example(seed, i)
        key = f"w{seed}-{i:06d}"
        im.save(folder / f"{key}.png")
        caps.append(json.dumps({"key": key, "caption": caption_of(a)}) + "\n")
        atts.append(json.dumps({"key": key, **a}) + "\n")
    (folder / "captions.jsonl").write_text("".join(caps))
    (folder / "attributes.jsonl").write_text("".join(atts))
    return folder


def write_dataset(dest: str, folder: str | Path, seed: int, n: int, *, start: int = 0,
                  captions: bool = True, **storage_kw) -> dict:
    """Generate images into `folder` and write them through the normal data plane
    (`shards.prepare`, as `vlv-ray data prepare` does) to `dest`; return the manifest."""
    from vlv_ray.data import shards

    folder = write_folder(folder, seed, n, start=start)
    return shards.prepare(str(folder), dest, shard_rows=max(256, n), row_group_rows=256,
                          captions=str(folder / "captions.jsonl") if captions else None, progress=False,
                          **storage_kw)


def read_attributes(folder: str | Path) -> dict[str, dict[str, str]]:
    """key → attributes, from a folder written by `write_folder`."""
    out = {}
    for line in (Path(folder) / "attributes.jsonl").read_text().splitlines():
        rec = json.loads(line)
        out[rec.pop("key")] = rec
    return out
