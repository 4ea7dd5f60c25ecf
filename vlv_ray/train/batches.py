"""Batches for one rank, epoch after epoch, with a position a checkpoint can hold.

Every rank serves its own part of the epoch (`data/order.py`) through its own Ray Data
pipeline. Ranks stay in lockstep: each micro-step they agree (one all-reduce) that all
of them have a batch; when any rank's part runs out, the epoch ends for all, so no
rank waits in a collective that another never reaches. A rank can run out first when
some of its rows were undecodable: those rows are dropped, never padded.
"""
from __future__ import annotations

import logging
from typing import Any, Callable

import numpy as np
import torch
from ray.data.collate_fn import NumpyBatchCollateFn

from vlv_ray import storage
from vlv_ray.config import JobConfig
from vlv_ray.data import latents, order, pipeline


class _NumpyCollate(NumpyBatchCollateFn):
    """Our collate (numpy batch → tensors; the default cannot take the string key column) in
    the class form Ray 2.47+ asks for instead of a plain function."""

    def __init__(self, fn: Callable[[dict[str, np.ndarray]], dict[str, Any]]):
        self.fn = fn

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        return self.fn(batch)


class Batches:
    def __init__(self, cfg: JobConfig, rank: int, world: int, position: dict[str, Any] | None,
                 collate: Callable, *, data_uri: str, rejects_uri: str | None, vae_digest: str | None = None):
        kw = cfg.storage.options
        self.fs, self.paths, manifest = pipeline.shard_paths(data_uri, **kw)
        self.blocks = pipeline.job_blocks(data_uri, manifest, cfg.data.max_images)
        self.cfg, self.rank, self.world, self.collate = cfg, rank, world, collate
        self.rejects_uri = rejects_uri
        # The latent cache, when one matches this job's resolution and VAE (data/latents.py).
        self.cache = latents.find_cache(manifest, cfg.data.resolution, vae_digest) if vae_digest else None
        self.latent_paths = None
        if self.cache:
            self.latent_paths = [storage.resolve(storage.join(data_uri, self.cache["dir"], f["path"]), **kw)[1]
                                 for f in self.cache["files"]]
        self.position = order.resized(position or {"epoch": 0}, world)
        # Each epoch starts a dataset; Ray Data's per-dataset INFO lines would bury the log.
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        self.rejected = 0  # rows this rank consumed but could not decode, this run
        self._open()

    @property
    def epoch(self) -> int:
        return self.position["epoch"]

    def _open(self) -> None:
        segments = order.rank_segments(self.blocks, self.cfg.seed, self.position, self.world, self.rank)
        consumed = self.position.get("consumed")
        self._base = consumed[self.rank] if consumed else 0  # rows of this rank's part already used
        self._consumed = self._base
        self._served = 0
        ds = pipeline.rank_dataset(self.cfg, segments, self.blocks, fs=self.fs, paths=self.paths,
                                   epoch=self.epoch, rejects_uri=self.rejects_uri, latent_paths=self.latent_paths)
        self._it = iter(()) if ds is None else iter(ds.iter_torch_batches(
            batch_size=self.cfg.data.batch_size, collate_fn=_NumpyCollate(self._collate), drop_last=True))

    def _collate(self, batch: dict[str, Any]) -> dict[str, Any]:
        out = {**self.collate(batch), "pos": batch["_pos"].tolist()}
        if self.cache and all(len(b) for b in batch["latent"]):  # else the stage encodes this batch itself
            raw = np.frombuffer(b"".join(batch["latent"]), dtype=np.int16).reshape(-1, *self.cache["shape"])
            out["latent"] = torch.from_numpy(raw.copy()).view(getattr(torch, latents.DTYPES[self.cache["dtype"]]))
        return out

    def next(self) -> tuple[int, dict[str, Any]]:
        """(epoch, batch); collective: every rank calls it once per micro-step."""
        while True:
            batch = next(self._it, None)
            if _all_ranks(batch is not None, self.world):
                last = int(batch["pos"][-1]) + 1  # the part's rows up to here are used (or dropped)
                self.rejected += (self._base + last - self._consumed) - len(batch["pos"])
                self._consumed = self._base + last
                self._served += 1
                return self.epoch, batch
            if self._served == 0 and self.position.get("consumed") is None:  # a whole fresh epoch
                raise RuntimeError("a worker's part of the data has fewer rows than one batch; "
                                   "lower data.batch_size or use fewer workers")
            close = getattr(self._it, "close", None)
            if close:
                close()  # stop this epoch's readers
            self.position = {"epoch": self.epoch + 1}
            self._open()

    def state(self) -> dict[str, Any]:
        """The position every rank has reached; collective (one all-gather of a number)."""
        consumed = [0] * self.world
        if self.world == 1:
            consumed[0] = self._consumed
        else:
            t = torch.tensor([self._consumed], dtype=torch.int64)
            out = [torch.zeros(1, dtype=torch.int64) for _ in range(self.world)]
            torch.distributed.all_gather(out, t)
            consumed = [int(x.item()) for x in out]
        return {"epoch": self.epoch, "splits": self.position.get("splits", []), "world": self.world,
                "consumed": consumed}


def _all_ranks(flag: bool, world: int) -> bool:
    if world == 1:
        return flag
    t = torch.tensor([1 if flag else 0], dtype=torch.int32)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MIN)
    return bool(t.item())
