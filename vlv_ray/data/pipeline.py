"""The Ray Data read path: manifest → read_parquet → CPU decode/resize/crop → dataset.

The dataset is handed to `TorchTrainer(datasets={"train": ...})`; Ray Train's default
DataConfig streaming-splits it across the workers. Rows that cannot be decoded are
dropped (never replaced by zeros) and counted in the decode tasks' log output.
"""
from __future__ import annotations

import json
import logging
import sys
import uuid
from typing import TYPE_CHECKING

import numpy as np

from vlv_ray import storage
from vlv_ray.data import shards

if TYPE_CHECKING:
    from vlv_ray.config import JobConfig

log = logging.getLogger(__name__)


def shard_paths(data_uri: str, *, endpoint_url: str | None = None, region: str | None = None):
    """(filesystem, [paths within it]) of the shards the manifest lists, and only those."""
    kw = {"endpoint_url": endpoint_url, "region": region}
    manifest = shards.load_manifest(data_uri, **kw)
    fs, _ = storage.resolve(data_uri, **kw)
    paths = [storage.resolve(u, **kw)[1] for u in shards.shard_uris(data_uri, manifest)]
    if not paths:
        raise shards.DataError(f"{data_uri}/manifest.json: lists no shards")
    return fs, paths, manifest


def decode_images(batch: dict[str, np.ndarray], resolution: int, rejects_uri: str | None = None,
                  storage_kw: dict | None = None) -> dict[str, np.ndarray]:
    """A `map_batches` function: bytes → uint8 [n, res, res, 3]; bad rows dropped, never zeroed.

    Each dropped row's key and reason go to `<rejects_uri>/part-<uuid>.jsonl` (one small
    object per batch that had any), so nothing is lost silently and the run can count them.
    """
    from vlv_ray.data.decode import decode_batch

    good, rejects = decode_batch(batch, resolution)
    for key, reason in rejects:
        print(f"[vlv-ray] dropped row key={key!r}: {reason}", file=sys.stderr, flush=True)
    if rejects and rejects_uri:
        lines = "".join(json.dumps({"key": k, "reason": r}) + "\n" for k, r in rejects)
        storage.write_bytes_atomic(storage.join(rejects_uri, f"part-{uuid.uuid4().hex}.jsonl"),
                                   lines.encode(), **(storage_kw or {}))
    return good


def count_rejects(rejects_uri: str, **kw) -> dict[str, int]:
    """Distinct rows dropped during training, by reason.

    Every epoch decodes the same bad row again, so rows are counted once by key.
    """
    reason_of: dict[str, str] = {}
    for part in storage.list_files(rejects_uri, ".jsonl", **kw):
        for line in storage.read_bytes(part, **kw).decode().splitlines():
            rec = json.loads(line)
            reason_of[rec["key"]] = rec["reason"]
    counts: dict[str, int] = {}
    for reason in reason_of.values():
        counts[reason] = counts.get(reason, 0) + 1
    return counts


def build_dataset(cfg: "JobConfig", *, data_uri: str, rejects_uri: str | None = None):
    import ray.data

    fs, paths, _ = shard_paths(data_uri, endpoint_url=cfg.storage.endpoint_url, region=cfg.storage.region)
    # Training logs carry their own throughput line; Ray Data's bars would drown it.
    ray.data.DataContext.get_current().enable_progress_bars = False
    columns = ["key", "image"] + (["caption"] if cfg.stage == 2 else [])
    ds = ray.data.read_parquet(paths, filesystem=fs, columns=columns)
    return ds.map_batches(
        decode_images,
        fn_kwargs={"resolution": cfg.data.resolution, "rejects_uri": rejects_uri,
                   "storage_kw": {"endpoint_url": cfg.storage.endpoint_url, "region": cfg.storage.region}},
        batch_format="numpy",
        batch_size=64,
        num_cpus=cfg.data.decode_cpus,
    )
