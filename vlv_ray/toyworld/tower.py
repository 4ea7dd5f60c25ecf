"""A toy vision tower pretrained on world images, as Florence-2 is pretrained before VLV uses it.

    python -m vlv_ray.toyworld.tower [--out FILE] [--steps N]   # remake assets/vision_tower.safetensors

The toy preset's Florence-2 vision tower (DaViT) and projector, built exactly as the preset
builds them (seed 0), learn to read the five attributes of world images from a world seed
no training or held-out set uses (`TOWER_SEED`): a linear head per attribute on the 17
image tokens, cross-entropy, AdamW. Supervised, as Florence-2's own pretraining is (FLD-5B's
captions, boxes and regions); the heads are dropped, and `model.florence=FILE` loads the
tower and projector into a toy job's encoder, frozen as Florence's tower is in stage 1.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from vlv_ray.toyworld import world
from vlv_ray.toyworld.assets import TOWER_FILE
from vlv_ray.toyworld.models import (  # noqa: F401 (PARTS, load_into: the file's format, named here too)
    NUM_QUERIES, PARTS, build_stage1, load_into, tower_state,
)

TOWER_SEED = 23  # world seed of its pretraining images: not the demo's (7), the reader's (2) or held-out (1000)


def _encoder(seed: int = 0):
    encoder, _ = build_stage1(num_queries=NUM_QUERIES, resolution=world.SIZE, sd_path=None, train_vision_tower=True,
                              seed=seed)
    return encoder


def features(encoder, images: torch.Tensor) -> torch.Tensor:
    """uint8 [B, 32, 32, 3] → the tower + projector's image tokens, flattened [B, 17 × 64]."""
    return encoder.florence.get_image_features(encoder.pixel_values(images)).pooler_output.flatten(1)


def probe(encoder, *, n_train: int = 3000, n_test: int = 1000, steps: int = 300) -> dict[str, float]:
    """Held-out accuracy of linear probes (one per attribute) on the frozen tokens: what the
    tower's features carry, before and after pretraining."""
    from vlv_ray.toyworld.reader import accuracy, labels

    with torch.no_grad():
        encoder.eval()
        xa, ta = world.arrays(TOWER_SEED + 1, n_train)
        xb, tb = world.arrays(TOWER_SEED + 2, n_test)
        fa, fb = features(encoder, torch.from_numpy(xa)), features(encoder, torch.from_numpy(xb))
    mu, sd = fa.mean(0), fa.std(0) + 1e-6
    fa, fb, y = (fa - mu) / sd, (fb - mu) / sd, labels(ta)
    torch.manual_seed(0)
    heads = nn.ModuleDict({k: nn.Linear(fa.shape[1], len(v)) for k, v in world.ATTRIBUTES.items()})
    opt = torch.optim.AdamW(heads.parameters(), lr=1e-2, weight_decay=1e-3)
    for _ in range(steps):  # full batch
        loss = sum(F.cross_entropy(heads[k](fa), y[k]) for k in heads)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    with torch.no_grad():
        pred = {k: heads[k](fb).argmax(-1).tolist() for k in heads}
    read = [{k: world.ATTRIBUTES[k][pred[k][i]] for k in heads} for i in range(n_test)]
    return accuracy(read, tb)


def train(*, n_images: int = 20000, steps: int = 800, batch: int = 64, seed: int = 0, log=print):
    """The toy encoder (seed `seed`) with its tower and projector pretrained; returns the encoder."""
    from vlv_ray.toyworld.reader import fit_attributes, labels

    encoder = _encoder(seed)
    encoder.train()
    arr, attrs = world.arrays(TOWER_SEED, n_images)
    images, y = torch.from_numpy(arr), labels(attrs)
    dim = features(encoder, images[:1]).shape[1]
    torch.manual_seed(seed)
    heads = nn.ModuleDict({k: nn.Linear(dim, len(v)) for k, v in world.ATTRIBUTES.items()})
    params = [p for m in (encoder.florence.vision_tower, encoder.florence.multi_modal_projector, heads)
              for p in m.parameters()]

    def logits_of(idx: torch.Tensor) -> dict[str, torch.Tensor]:
        h = features(encoder, images[idx])
        return {k: head(h) for k, head in heads.items()}

    fit_attributes(params, logits_of, y, n_images=n_images, steps=steps, batch=batch,
                   g=torch.Generator().manual_seed(seed), log=log, name="tower")
    return encoder.eval()


def main(argv: list[str] | None = None) -> int:
    from safetensors.torch import save_file

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(TOWER_FILE))
    p.add_argument("--steps", type=int, default=800)
    p.add_argument("--threads", type=int, default=None, help="torch threads (1: the committed file, bit for bit)")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    before = probe(_encoder())
    encoder = train(steps=a.steps, log=lambda m: print(m, flush=True))
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    save_file(tower_state(encoder.florence), a.out)
    after = probe(encoder)
    print(json.dumps({"probe_random_tower": before, "probe_pretrained_tower": after, "out": a.out}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
