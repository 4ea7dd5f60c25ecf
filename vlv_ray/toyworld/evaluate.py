"""The numbers that say whether the method learned, on held-out world images.

- caption attribute accuracy: a stage-2 export captions the images, `world.parse_caption`
  reads the attributes back, each is compared with the truth (per attribute, overall);
- reconstruction attribute accuracy: the stage-1 encoder's caption embeddings → the frozen
  teacher (CFG sampling) → the attribute reader, compared with the truth;
- the teacher's own accuracy: its samples from the true captions, read by the reader;
- an untrained stage-1 export, for stage 2 without stage 1 (the paper's Table 7).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vlv_ray.toyworld import reader as attribute_reader
from vlv_ray.toyworld import world


FID_FEATURES = "vlv_ray.toyworld.reader:feature_extractor"  # FID in miniature: the reader's features
RECON_STEPS, RECON_GUIDANCE = 20, 3.0  # how `reconstructions` samples by default


def held_out(n: int, seed: int = attribute_reader.HELD_OUT_SEED) -> tuple[np.ndarray, list[dict[str, str]]]:
    """n images of a world seed used by no training set (uint8 [n, 32, 32, 3]) and their attributes."""
    return world.arrays(seed, n)


def caption_accuracy(stage2_uri: str, images: np.ndarray, truth: list[dict[str, str]], *, batch: int = 128,
                     beams: int = 1, **kw) -> tuple[dict[str, float], list[str]]:
    from vlv_ray.models import export

    model, _ = export.load_stage2(stage2_uri, **kw)
    captions: list[str] = []
    for i in range(0, len(images), batch):
        captions += model.caption(torch.from_numpy(images[i:i + batch]), max_new_tokens=14, num_beams=beams)
    parsed = [world.parse_caption(c) for c in captions]
    return attribute_reader.accuracy(parsed, truth), captions


@torch.no_grad()
def reconstructions(stage1_uri: str, images: np.ndarray, *, steps: int = RECON_STEPS,
                    guidance: float = RECON_GUIDANCE, seed: int = 0, batch: int = 128, **kw) -> np.ndarray:
    """The teacher's CFG samples from each image's stage-1 caption embeddings (uint8 like `images`)."""
    from vlv_ray.infer.reconstruct import reconstruct_batch
    from vlv_ray.models import export

    encoder, decoder, meta = export.load_stage1(stage1_uri, **kw)
    g = torch.Generator().manual_seed(seed)
    return np.concatenate([reconstruct_batch(encoder, decoder, torch.from_numpy(images[i:i + batch]), steps=steps,
                                             guidance=guidance, generator=g, resolution=meta["resolution"]).numpy()
                           for i in range(0, len(images), batch)])


def fid_in_miniature(originals: np.ndarray, generated: np.ndarray, *, guidance: float | None = RECON_GUIDANCE,
                     steps: int | None = RECON_STEPS, seed: int = 0) -> dict:
    """FID of `generated` against `originals` with the attribute reader as the extractor,
    through the code `vlv-ray eval` reduces with, and the protocol that produced it."""
    from vlv_ray.eval.features import describe
    from vlv_ray.eval.fid import fid_of_images

    value, dim = fid_of_images(originals, generated, FID_FEATURES)
    return {"value": value, "protocol": {"images": len(originals), "resolution": world.SIZE,
                                         "resize": "none (world images and the teacher's samples are 32 px)",
                                         "features": describe(FID_FEATURES, dim), "guidance": guidance,
                                         "steps": steps, "seed": seed}}


@torch.no_grad()
def teacher_samples(sd_path: str, attrs: list[dict[str, str]], *, steps: int = 20, guidance: float = 3.0,
                    seed: int = 0, batch: int = 128) -> np.ndarray:
    """The teacher's text-to-image samples for the captions of `attrs`."""
    from vlv_ray.models.decoder import FrozenDiffusion
    from vlv_ray.toyworld import tokens
    from vlv_ray.toyworld.train_teacher import caption_ids

    teacher = FrozenDiffusion.from_pretrained(sd_path)
    tok = tokens.clip_tokenizer()
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(0, len(attrs), batch):
        chunk = attrs[i:i + batch]
        ids = caption_ids(tok, [world.caption_of(a) for a in chunk])
        cond = teacher.text_encoder(input_ids=ids).last_hidden_state
        out.append(teacher.sample(cond, teacher.empty_prompt(len(chunk), tok), steps=steps, guidance=guidance,
                                  generator=g).numpy())
    return np.concatenate(out)


def read_accuracy(images: np.ndarray, truth: list[dict[str, str]], reader=None) -> dict[str, float]:
    reader = reader or attribute_reader.load()
    return attribute_reader.accuracy(reader.read(images), truth)


def spread(runs: list[dict[str, float]]) -> dict:
    """The same metrics from several seeds: mean, sample std, min and max of each key, and the
    runs themselves (a spread is only as good as the runs it came from)."""
    keys = list(runs[0])
    col = {k: np.array([r[k] for r in runs], dtype=float) for k in keys}
    return {"n": len(runs),
            "mean": {k: float(v.mean()) for k, v in col.items()},
            "std": {k: float(v.std(ddof=1)) if len(v) > 1 else 0.0 for k, v in col.items()},
            "min": {k: float(v.min()) for k, v in col.items()},
            "max": {k: float(v.max()) for k, v in col.items()},
            "runs": runs}


def untrained_stage1(out: str | Path, *, num_queries: int, resolution: int, seed: int = 0,
                     sd_path: str | None = None, florence: str | None = None) -> str:
    """A stage-1 export of the encoder as stage 1 would start it (same seed, same vision tower
    `florence`), never trained: stage 2 from here is stage 2 without stage 1."""
    from vlv_ray.models import export
    from vlv_ray.models.presets import build_stage1

    encoder, _ = build_stage1("toy", num_queries=num_queries, resolution=resolution, sd_path=sd_path, seed=seed,
                              florence_path=florence)
    tensors = {n: p for n, p in encoder.named_parameters() if p.requires_grad}
    meta = {"kind": "vlv-stage1", "preset": "toy", "num_queries": num_queries, "resolution": resolution,
            "seed": seed, "florence": florence, "stable_diffusion": sd_path, "train_vision_tower": False,
            "step": 0, "config_hash": "untrained", "job": "no-stage1"}
    return export.save(str(out), tensors, meta)


def grid(columns: list[np.ndarray], *, rows: int, scale: int = 4) -> Image.Image:
    """Images side by side: each of `columns` (uint8 [n, H, W, 3]) is a column; `rows` images each."""
    cols = [np.concatenate(list(c[:rows]), axis=0) for c in columns]
    im = Image.fromarray(np.concatenate(cols, axis=1))
    return im.resize((im.width * scale, im.height * scale), Image.Resampling.NEAREST)


def pairs_grid(originals: np.ndarray, others: np.ndarray, *, n: int = 16, per_row: int = 8,
               scale: int = 4) -> Image.Image:
    """n (original, other) pairs, `per_row` pairs to a row: originals beside their reconstructions."""
    pairs = [np.concatenate([o, r], axis=1) for o, r in zip(originals[:n], others[:n])]
    rows = [np.concatenate(pairs[i:i + per_row], axis=1) for i in range(0, len(pairs), per_row)]
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    im = Image.fromarray(np.concatenate(rows, axis=0))
    return im.resize((im.width * scale, im.height * scale), Image.Resampling.NEAREST)


def fid_reading(n: int = 200, workdir: str | Path = "vlv-fid-reading") -> list[dict]:
    """What FID in miniature reads, beside attribute accuracy, on the committed teacher: n
    held-out originals against other world images (FID's floor), the teacher's samples from
    the true captions and from other images' captions, and an untrained encoder's reconstructions."""
    from vlv_ray.toyworld.assets import TEACHER_DIR

    x, truth = held_out(n)
    shuffled = [truth[i] for i in np.random.default_rng(0).permutation(n)]
    untrained = untrained_stage1(Path(workdir) / "untrained-stage1", num_queries=4, resolution=world.SIZE,
                                 sd_path=str(TEACHER_DIR))
    sets = {"other world images (seed 3)": world.arrays(3, n)[0],
            "teacher samples from the true captions": teacher_samples(str(TEACHER_DIR), truth),
            "teacher samples from other images' captions": teacher_samples(str(TEACHER_DIR), shuffled),
            "reconstructions, untrained stage-1 encoder": reconstructions(untrained, x)}
    return [{"set": k, "attribute_accuracy": read_accuracy(v, truth)["overall"], "fid": fid_in_miniature(x, v)}
            for k, v in sets.items()]


if __name__ == "__main__":  # python -m vlv_ray.toyworld.evaluate [N]: the README's FID-in-miniature table
    import json
    import sys

    for row in fid_reading(int(sys.argv[1]) if len(sys.argv) > 1 else 200):
        print(json.dumps(row), flush=True)
