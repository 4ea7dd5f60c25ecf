"""The Ray Data read path: plan → parquet row groups → CPU decode/resize/crop → batches.

Each training worker builds its own dataset from its part of the epoch's plan
(`data/order.py`), so the order is deterministic and the position resumable. Rows that
cannot be decoded are dropped (never replaced by zeros), logged, and recorded by key in
the run's rejects folder.
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
from vlv_ray.data.manifest import shard_paths  # noqa: F401 (this module's API: training resolves shards here)

if TYPE_CHECKING:
    from vlv_ray.config import JobConfig

log = logging.getLogger(__name__)


def decode_images(batch: dict[str, np.ndarray], resolution: int, rejects_uri: str | None = None,
                  storage_kw: dict | None = None) -> dict[str, np.ndarray]:
    """A `map_batches` function: bytes → uint8 [n, res, res, 3]; bad rows dropped, never zeroed.

    Each dropped row's key and reason go to `<rejects_uri>/part-<uuid>.jsonl` (one small
    object per batch that had any), so nothing is lost silently and the run can count them.
    """
    from vlv_ray.data.decode import decode_batch

    uncaptioned: list[tuple[str, str]] = []
    if "caption" in batch:  # stage 2 learns from captions: a row without one is of no use
        has = np.asarray([c is not None and str(c).strip() != "" for c in batch["caption"]], dtype=bool)
        uncaptioned = [(str(k), "no_caption") for k in np.asarray(batch["key"])[~has]]
        batch = {c: np.asarray(v)[has] for c, v in batch.items()}
    good, rejects = decode_batch(batch, resolution)
    rejects = uncaptioned + rejects
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


def job_blocks(uri: str, manifest: dict, max_images: int | None) -> list:
    """The blocks a job reads from the dataset at `uri`: all of them, or the first `max_images`
    rows of the manifest (`data.max_images`: a data-volume sweep's point, read in place)."""
    from vlv_ray.data import order

    blocks = order.blocks_from_manifest(manifest)
    total = sum(b.rows for b in blocks)
    if max_images is not None and max_images > total:
        raise shards.DataError(f"data.max_images: got {max_images}, expected at most the {total} images "
                               f"{uri}/manifest.json lists")
    return order.first_rows(blocks, max_images)


def one_batch_per_worker(cfg: "JobConfig", rows: int) -> str | None:
    """None when each of the job's workers gets at least one batch from `rows` images, else what
    it needs (for the caller's message, which names its own key): a rank's part of an epoch is
    rows // workers (data/order.py), and a part smaller than a batch ends the first epoch before
    the first step (train/batches.py)."""
    workers, batch = cfg.scaling.num_workers, cfg.data.batch_size
    if rows // workers >= batch:
        return None
    return f"expected at least one batch per worker ({workers} × data.batch_size {batch} = {workers * batch})"


def read_segments(batch: dict[str, np.ndarray], fs, paths: list[str], seed: int, epoch: int,
                  columns: list[str], latent_paths: list[str] | None = None) -> dict[str, np.ndarray]:
    """A `map_batches` function: plan items → the rows they name, in plan order.

    Each item is one segment of one block (a parquet row group); the block's rows are
    permuted by (seed, epoch, block) and the segment's slice of that order is returned,
    with `_pos`, the row's place in this rank's part of the epoch, and, from the latent
    cache when there is one, the same rows' `latent`.
    """
    from vlv_ray.data.order import row_permutation

    out: dict[str, list] = {c: [] for c in columns}
    pos: list[np.ndarray] = []
    # `stored`: the rows the group holds; `rows`: those it serves (a limited dataset's last block, fewer).
    # The held-out items (eval/job.py held_out_items) are whole groups and carry no `stored`.
    stored_rows = batch.get("stored", batch["rows"])
    for shard, group, block, rows, stored, start, stop, pos0 in zip(
            batch["shard"], batch["group"], batch["block"], batch["rows"], stored_rows, batch["start"],
            batch["stop"], batch["pos"]):
        path = paths[int(shard)]
        table = storage.retry_reads(lambda: _read_block(fs, path, int(group), columns), path)
        if table.num_rows != stored:
            where = "file" if group < 0 else f"row group {group}"
            raise shards.DataError(f"{path}: {where} has {table.num_rows} rows, the manifest says {stored}")
        take = row_permutation(seed, epoch, int(block), int(rows))[int(start):int(stop)]
        table = table.take(take)  # indices < rows: only the group's first `rows` rows are ever served
        for c in columns:
            out[c].append(table.column(c).to_numpy(zero_copy_only=False))
        if latent_paths is not None:
            lpath = latent_paths[int(shard)]
            lt = storage.retry_reads(lambda: _read_block(fs, lpath, int(group), ["key", "latent"]), lpath)
            lt = lt.take(take)
            if not lt.column("key").equals(table.column("key")):
                raise shards.DataError(f"{lpath}: keys differ from {path}; rebuild the cache with `vlv-ray data latents`")
            out.setdefault("latent", []).append(lt.column("latent").to_numpy(zero_copy_only=False))
        pos.append(np.arange(pos0, pos0 + table.num_rows, dtype=np.int64))
    result = {c: np.concatenate(v) if v else np.zeros(0, dtype=object) for c, v in out.items()}
    result["_pos"] = np.concatenate(pos) if pos else np.zeros(0, dtype=np.int64)
    return result


def _read_block(fs, path: str, group: int, columns: list[str]):
    """One row group (or, for -1, the whole file) of a parquet file."""
    import pyarrow.parquet as pq

    with fs.open_input_file(path) as f:
        pf = pq.ParquetFile(f)
        missing = [c for c in columns if c not in pf.schema_arrow.names]
        if missing:
            raise shards.DataError(f"{path}: no column {missing[0]!r} (expected the vlv-ray shard schema)")
        return pf.read(columns=columns) if group < 0 else pf.read_row_group(group, columns=columns)


def rank_dataset(cfg: "JobConfig", segments, blocks, *, fs, paths: list[str], epoch: int,
                 rejects_uri: str | None = None, latent_paths: list[str] | None = None):
    """This rank's rows for one epoch, in plan order: read → CPU decode, on Ray Data tasks.

    Every rank builds its own dataset from its own plan (data/order.py), so which rows a
    rank gets, and in what order, is decided by (seed, epoch, position), not by which
    consumer asked first as with `streaming_split`. Ray Data keeps the order
    (`preserve_order`) while it reads and decodes ahead in parallel.
    """
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # the training log line carries throughput
    ctx.execution_options.preserve_order = True
    items, pos = [], 0
    for s in segments:
        b = blocks[s.block]
        items.append({"shard": b.shard, "group": b.group, "block": s.block, "rows": b.rows, "stored": b.stored_rows,
                      "start": s.start, "stop": s.stop, "pos": pos})
        pos += s.rows
    if not items:
        return None
    columns = ["key", "image"] + (["caption"] if cfg.stage == 2 else [])
    storage_kw = cfg.storage.options
    ds = ray.data.from_items(items, override_num_blocks=len(items))
    # One task per segment reads and decodes it. A separate decode `map_batches` with its own
    # batch size would make Ray Data bundle many segments into one task: no parallelism.
    return ds.map_batches(
        read_and_decode, batch_size=1, batch_format="numpy", num_cpus=cfg.data.decode_cpus,
        fn_kwargs={"read": {"fs": fs, "paths": paths, "seed": cfg.seed, "epoch": epoch, "columns": columns,
                            "latent_paths": latent_paths},
                   "decode": {"resolution": cfg.data.resolution, "rejects_uri": rejects_uri,
                              "storage_kw": storage_kw}})


def read_and_decode(batch: dict[str, np.ndarray], read: dict, decode: dict) -> dict[str, np.ndarray]:
    return decode_images(read_segments(batch, **read), **decode)
