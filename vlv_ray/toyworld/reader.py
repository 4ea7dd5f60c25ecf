"""The attribute reader: a small CNN that reads an image's five attributes.

    python -m vlv_ray.toyworld.reader [--out FILE] [--steps N]   # train it (fixed seed), report held-out accuracy

A classifier rather than direct pixel measurement because it must also read the teacher's
samples and stage-1 reconstructions, which are blurred and colour-shifted by the VAE:
thresholds on palette colours and connected components break there. It is trained on
world images with blur, noise and colour-shift augmentation, so it reads both.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vlv_ray.toyworld import world

READER_FILE = Path(__file__).resolve().parent / "assets" / "reader.safetensors"
READER_SEED = 2  # world seed of its training images
HELD_OUT_SEED = 1000  # world seed of held-out evaluation images (the demo uses it too)


class Reader(nn.Module):
    def __init__(self):
        super().__init__()

        def block(i, o):
            return nn.Sequential(nn.Conv2d(i, o, 3, padding=1), nn.GroupNorm(8, o), nn.GELU(), nn.MaxPool2d(2))

        # ≈3M multiply-adds per image: trains in minutes on one CPU core
        self.body = nn.Sequential(block(3, 16), block(16, 32), block(32, 64))  # 32 → 4 px
        self.heads = nn.ModuleDict({k: nn.Linear(64 * 4 * 4, len(v)) for k, v in world.ATTRIBUTES.items()})

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """uint8 [B, 32, 32, 3] → logits per attribute."""
        x = images.permute(0, 3, 1, 2).float() / 127.5 - 1.0
        h = self.body(x).flatten(1)
        return {k: head(h) for k, head in self.heads.items()}

    @torch.no_grad()
    def read(self, images: np.ndarray | torch.Tensor, batch: int = 256) -> list[dict[str, str]]:
        """Attributes of each image (uint8 [N, 32, 32, 3])."""
        self.eval()
        images = torch.as_tensor(np.asarray(images))
        out: list[dict[str, str]] = []
        for i in range(0, len(images), batch):
            logits = self(images[i:i + batch])
            idx = {k: v.argmax(-1).tolist() for k, v in logits.items()}
            out += [{k: world.ATTRIBUTES[k][idx[k][j]] for k in logits} for j in range(len(logits["count"]))]
        return out


class ReaderFeatures(nn.Module):
    """The reader's last conv block, averaged over its 4×4 positions, as an FID feature
    extractor: uint8 [B, 3, 32, 32] → [B, 64], called as torchmetrics' FID calls one. The
    same place Inception's pool3 (FID's standard features) sits: the last conv features,
    globally pooled. Not the flattened 1024 the heads read: FID's covariance over 1024
    features is rank-deficient on 500 images and costs a minute of eigenvalues per score."""

    num_features = 64

    def __init__(self, reader: Reader | None = None):
        super().__init__()
        self.reader = reader or load()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float() / 127.5 - 1.0
        return self.reader.body(x).mean(dim=(2, 3))


def feature_extractor() -> ReaderFeatures:
    """`--features vlv_ray.toyworld.reader:feature_extractor`: the committed reader's features."""
    return ReaderFeatures()


def load(path: str | Path = READER_FILE) -> Reader:
    from safetensors.torch import load_file

    reader = Reader()
    reader.load_state_dict(load_file(str(path)))
    return reader.eval()


def augment(images: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Blur (random strength), colour shift and noise: what a VAE round trip does to an image."""
    x = images.permute(0, 3, 1, 2).float()
    b = len(x)
    sigma = torch.rand(b, generator=g) * 1.5
    k = torch.arange(-2, 3, dtype=torch.float32)
    kern = torch.exp(-k[None] ** 2 / (2 * sigma[:, None].clamp(min=1e-3) ** 2))
    kern = kern / kern.sum(-1, keepdim=True)  # [B, 5]
    x = x.reshape(1, b * 3, 32, 32)
    kh = kern.repeat_interleave(3, 0)[:, None, None, :]
    x = F.conv2d(F.pad(x, (2, 2, 0, 0), mode="replicate"), kh, groups=b * 3)
    x = F.conv2d(F.pad(x, (0, 0, 2, 2), mode="replicate"), kh.transpose(2, 3), groups=b * 3)
    x = x.reshape(b, 3, 32, 32)
    x = x * (1 + 0.15 * (torch.rand(b, 3, 1, 1, generator=g) - 0.5)) + 20 * (torch.rand(b, 3, 1, 1, generator=g) - 0.5)
    x = x + torch.randn(x.shape, generator=g) * torch.rand(b, 1, 1, 1, generator=g) * 8
    return x.clamp(0, 255).round().to(torch.uint8).permute(0, 2, 3, 1)


def labels(attrs: list[dict[str, str]]) -> dict[str, torch.Tensor]:
    return {k: torch.tensor([v.index(a[k]) for a in attrs]) for k, v in world.ATTRIBUTES.items()}


def accuracy(predicted: list[dict[str, str | None]], truth: list[dict[str, str]]) -> dict[str, float]:
    """Per-attribute accuracy and `overall` (the mean over attributes), in [0, 1]."""
    per = {k: float(np.mean([p.get(k) == t[k] for p, t in zip(predicted, truth)])) for k in world.ATTRIBUTES}
    return {**per, "overall": float(np.mean(list(per.values())))}


def train(*, n_images: int = 20000, steps: int = 400, batch: int = 64, seed: int = 0, log=print) -> Reader:
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    arr, attrs = world.arrays(READER_SEED, n_images)
    images, y = torch.from_numpy(arr), labels(attrs)
    reader = Reader()
    fit_attributes(reader.parameters(), lambda idx: reader(augment(images[idx], g)), y, n_images=n_images,
                   steps=steps, batch=batch, g=g, log=log, name="reader")
    return reader.eval()


def fit_attributes(params, logits_of, y: dict[str, torch.Tensor], *, n_images: int, steps: int, batch: int,
                   g: torch.Generator, log, name: str) -> None:
    """The loop every classifier of world attributes trains with (the reader, the pretrained
    vision tower): `batch` random images a step (drawn from `g`), `logits_of(idx)` → logits
    per attribute, cross-entropy summed over attributes, AdamW with a one-cycle schedule."""
    opt = torch.optim.AdamW(params, lr=2e-3, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps, pct_start=0.1)
    t0 = time.time()
    for step in range(steps):
        idx = torch.randint(0, n_images, (batch,), generator=g)
        logits = logits_of(idx)
        loss = sum(F.cross_entropy(logits[k], y[k][idx]) for k in logits)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 100 == 0 or step == steps - 1:
            log(f"[{name}] step {step + 1}/{steps} loss {loss.item():.4f} ({time.time() - t0:.0f}s)")


def main(argv: list[str] | None = None) -> int:
    from safetensors.torch import save_file

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(READER_FILE))
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--held-out", type=int, default=2000)
    a = p.parse_args(argv)
    reader = train(steps=a.steps, log=lambda m: print(m, flush=True))
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in reader.state_dict().items()}, a.out)
    arr, truth = world.arrays(HELD_OUT_SEED, a.held_out)
    clean = accuracy(reader.read(arr), truth)
    blurred = accuracy(reader.read(augment(torch.from_numpy(arr), torch.Generator().manual_seed(1))), truth)
    print(json.dumps({"held_out_images": a.held_out, "accuracy": clean, "accuracy_augmented": blurred}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
