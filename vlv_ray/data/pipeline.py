"""The Ray Data read path: manifest → read_parquet → CPU decode/resize/crop → dataset.

The dataset is handed to `TorchTrainer(datasets={"train": ...})`; Ray Train's default
DataConfig streaming-splits it across the workers. Rows that cannot be decoded are
dropped (never replaced by zeros) and counted in the decode tasks' log output.
"""
from __future__ import annotations

import logging
import sys
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


def decode_images(batch: dict[str, np.ndarray], resolution: int) -> dict[str, np.ndarray]:
    """A `map_batches` function: bytes → uint8 [n, res, res, 3]; bad rows dropped."""
    from vlv_ray.data.decode import decode_batch

    good, rejects = decode_batch(batch, resolution)
    for key, reason in rejects:
        print(f"[vlv-ray] dropped row key={key!r}: {reason}", file=sys.stderr, flush=True)
    return good


def build_dataset(cfg: "JobConfig", *, data_uri: str):
    import ray.data

    fs, paths, _ = shard_paths(data_uri, endpoint_url=cfg.storage.endpoint_url, region=cfg.storage.region)
    # Training logs carry their own throughput line; Ray Data's bars would drown it.
    ray.data.DataContext.get_current().enable_progress_bars = False
    columns = ["key", "image"] + (["caption"] if cfg.stage == 2 else [])
    ds = ray.data.read_parquet(paths, filesystem=fs, columns=columns)
    return ds.map_batches(
        decode_images,
        fn_kwargs={"resolution": cfg.data.resolution},
        batch_format="numpy",
        batch_size=64,
        num_cpus=cfg.data.decode_cpus,
    )
