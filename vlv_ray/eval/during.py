"""Stage 1 measured by images seen: reconstruction FID at `logging.eval_every_images` points.

Each time the images seen (step × global batch) pass a point, every rank reconstructs its
share of the first `logging.eval_fid_images` images of `logging.eval_data` with the encoder
as it is, extracts features, and torchmetrics sums the FID statistics across ranks (its
metric states reduce over torch.distributed). Rank 0 appends one line to `<run>/eval.jsonl`:
images seen, step, FID, dollars so far, the protocol.

Preemption: the line is written only once the evaluation is whole, and a point already in
`eval.jsonl` is never evaluated again. A run killed mid-evaluation resumes from its last
checkpoint (before the point), passes the point again and redoes it; a run killed after the
line but before the next checkpoint passes the point again and finds it recorded. So every
point is counted exactly once.
"""
from __future__ import annotations

import json
from typing import Any

import numpy as np
import torch

from vlv_ray import storage

def recorded(uri: str, **kw) -> list[dict]:
    """The lines of an eval.jsonl (none when there is none yet)."""
    if not storage.exists(uri, **kw):
        return []
    return [json.loads(line) for line in storage.read_bytes(uri, **kw).decode().splitlines() if line.strip()]


def due(points: list[int], seen_before: int, seen_now: int, done: set[int]) -> list[int]:
    """The points this step passed that have no result yet."""
    return sorted(p for p in points if seen_before < p <= seen_now and p not in done)


class ImagesSeenEval:
    """Called by the loop after every step; does nothing unless a point was passed."""

    def __init__(self, cfg, paths, rank: int, world: int):
        self.cfg, self.rank, self.world = cfg, rank, world
        self.points = sorted(cfg.logging.eval_every_images)
        self.kw = paths.storage
        self.uri = paths.eval_log
        self.done = {int(r["images_seen"]) for r in recorded(self.uri, **self.kw)} if self.points else set()
        self._images = None  # this rank's share of the held-out images, read once

    def after_step(self, stage, engine, step: int, metrics: dict[str, Any], run=None) -> None:
        g = self.cfg.global_batch_size
        points = due(self.points, (step - 1) * g, step * g, self.done)
        if not points:
            return
        value, n = self._fid(stage, engine)  # collective: every rank takes part
        self.done.update(points)
        if self.rank != 0:
            return
        log = self.cfg.logging
        for p in points:  # a step that passes two points (a large batch) records both, once
            line = {"images_seen": p, "images_seen_at_step": step * g, "step": step, "fid": value,
                    "usd": metrics.get("cost_usd"),
                    "protocol": {"images": n, "data": log.eval_data, "features": log.eval_features,
                                 "guidance": log.eval_guidance, "steps": log.eval_sample_steps, "seed": self.cfg.seed,
                                 "resolution": self.cfg.data.resolution}}
            old = storage.read_bytes(self.uri, **self.kw) if storage.exists(self.uri, **self.kw) else b""
            storage.write_bytes_atomic(self.uri, old + (json.dumps(line) + "\n").encode(), **self.kw)
            print(f"[vlv-ray] eval at {p} images seen (step {step}): reconstruction FID {value:.4f} on {n} "
                  f"held-out images, ${line['usd'] or 0:.4f} so far", flush=True)
            if run is not None:
                run.log({"eval/recon_fid": value, "eval/images_seen": p}, step=step)

    def _fid(self, stage, engine) -> tuple[float, int]:
        from vlv_ray.eval import features as feature_lib
        from vlv_ray.eval.fid import FeatureFID
        from vlv_ray.models.modes import eval_mode

        images = self._held_out()
        extractor = feature_lib.load(self.cfg.logging.eval_features).to(stage.device)
        stats = None
        batch = self.cfg.data.batch_size
        with eval_mode(engine.module) as module:
            for i in range(0, max(len(images), 1), batch):
                x = torch.from_numpy(images[i:i + batch]).to(stage.device)
                if len(x) == 0:
                    break
                g = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + self.rank * 1_000 + i)
                fake = stage.reconstruct(module, x, g)
                real_f = feature_lib.extract(extractor, x, stage.device)
                fake_f = feature_lib.extract(extractor, fake, stage.device)
                stats = stats or FeatureFID(real_f.shape[1])
                stats.update(real_f, real=True)
                stats.update(fake_f, real=False)
        if stats is None:  # more ranks than images: this rank adds nothing, but must take part
            stats = FeatureFID(feature_lib.extract(extractor, torch.zeros(1, *images.shape[1:], dtype=torch.uint8),
                                                   stage.device).shape[1])
        return stats.compute(), self._total  # torchmetrics sums the states over all ranks first

    def _held_out(self) -> np.ndarray:
        """This rank's share (every world-th row) of the first eval_fid_images rows, decoded as in training."""
        if self._images is None:
            from vlv_ray.data import pipeline
            from vlv_ray.eval.job import held_out_items

            log = self.cfg.logging
            fs, paths, manifest = pipeline.shard_paths(log.eval_data, **self.kw)
            every = held_out_items(manifest)
            covered = np.cumsum([it["rows"] for it in every])
            # the row groups holding the first N rows, and one more for rows that do not decode
            items = every[:int(np.searchsorted(covered, log.eval_fid_images)) + 2]
            batch = {k: np.asarray([it[k] for it in items]) for k in items[0]}
            rows = pipeline.read_and_decode(batch, read={"fs": fs, "paths": paths, "seed": self.cfg.seed, "epoch": 0,
                                                         "columns": ["key", "image"]},
                                            decode={"resolution": self.cfg.data.resolution})
            first = rows["image"][:log.eval_fid_images]
            self._total = len(first)
            self._images = np.ascontiguousarray(first[self.rank::self.world])
        return self._images
