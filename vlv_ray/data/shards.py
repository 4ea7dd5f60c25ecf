"""Sharded image parquet: `data prepare` writes it (reading and checking: `manifest.py`).

A dataset is a folder (any storage URI) of `shard-00000.parquet`, … plus `manifest.json`
and `rejects/` (every rejected item's key and reason). Readers trust only the manifest,
and the manifest is written last, so a half-written shard is never read. While
preparing, each shard is written, read back and hashed, then recorded in
`_progress.json`; a re-run after a crash reuses every recorded shard whose bytes still
hash the same and continues from the next source item.

An existing dataset survives every prepare that does not finish: new shards never take
the names of the shards its manifest lists, and its manifest is replaced only by a
complete one. A dataset from another source is replaced only with `overwrite=True`.
"""
from __future__ import annotations

import hashlib
import io
import json
import sys
import time
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from vlv_ray import storage
from vlv_ray.data import sources
from vlv_ray.data.captions import load_captions
from vlv_ray.data.images import bound_short_side, check_image
from vlv_ray.data.manifest import (MANIFEST, PROGRESS, REJECTS_DIR, SCHEMA_VERSION, DataError, Manifest,
                                   ShardRecord, fmt_counts, format_inspect, inspect, iter_rows,
                                   load_manifest, shard_problems, shard_uris)

__all__ = ["prepare", "check_image", "load_captions", "DataError", "Manifest", "load_manifest", "shard_uris",
           "inspect", "format_inspect", "iter_rows", "fmt_counts", "SHARD_SCHEMA", "SCHEMA_VERSION", "MANIFEST", "PROGRESS"]

SHARD_SCHEMA = pa.schema([
    ("key", pa.string()),
    ("image", pa.binary()),  # the original encoded bytes, unless --max-short-side re-encoded them
    ("width", pa.int32()),  # of the stored image
    ("height", pa.int32()),
    ("source", pa.string()),
    ("caption", pa.string()),
    ("orig_width", pa.int32()),  # of the source image
    ("orig_height", pa.int32()),
])
IMAGE_SUFFIXES = sources.IMAGE_SUFFIXES


# ---------------------------------------------------------------------------- writing


def _write_shard(dest: str, index: int, rows: list[dict], kw: dict, row_group_rows: int = 256,
                 name: str | None = None) -> ShardRecord:
    """Shard `index` (named `name`, else shard-<index>.parquet), written and verified."""
    name = name or f"shard-{index:05d}.parquet"
    table = pa.Table.from_pylist(rows, schema=SHARD_SCHEMA)
    buf = io.BytesIO()
    # Row groups are the training reader's unit: one read task and one shuffle block each.
    pq.write_table(table, buf, compression="none", row_group_size=row_group_rows)  # images are already compressed
    data = buf.getvalue()
    uri = storage.join(dest, name)
    storage.write_bytes_atomic(uri, data, **kw)
    # Verify what storage holds before recording the shard as complete.
    back = storage.read_bytes(uri, **kw)
    digest = hashlib.sha256(data).hexdigest()
    meta = pq.read_metadata(io.BytesIO(back))
    if hashlib.sha256(back).hexdigest() != digest or meta.num_rows != len(rows):
        raise DataError(f"{uri}: verification after write failed (storage returned different bytes)")
    return {"path": name, "rows": len(rows), "bytes": len(data), "sha256": digest,
            "row_groups": [meta.row_group(g).num_rows for g in range(meta.num_row_groups)]}


def _open(src: str, captions: str | None, image_column: str | None, key_column: str | None,
          caption_column: str | None, kw: dict) -> tuple[Any, dict, str | None]:
    """(the source, captions by key from `captions`, their SHA-256): bad input as DataError."""
    try:
        source = sources.open_source(src, image_column=image_column, key_column=key_column,
                                     caption_column=caption_column, **kw)
    except sources.SourceError as e:
        raise DataError(str(e)) from None
    caption_of, captions_sha256 = load_captions(captions, **kw) if captions else ({}, None)
    if caption_of and source.kind == "folder":  # a folder's items are listed, not read: a cheap check
        keys = [(item.key, item.alias) for item in source.items()]
        if not any(k in caption_of or a in caption_of for k, a in keys):
            raise DataError(f"{captions}: no caption key matches an image key (image keys look like "
                            f"'{keys[0][0]}': the path under SRC without extension)")
    return source, caption_of, captions_sha256


def _previous(dest: str, src_id: str, inputs: str, overwrite: bool, say, kw: dict) -> tuple[Manifest | None, bool]:
    """(the manifest already in `dest`, or None when there is none or it is damaged; whether it is
    this very dataset, intact: nothing to do). Another source's dataset is replaced only on `overwrite`."""
    existing = _existing_manifest(dest, kw)
    if existing is not None and existing.get("src") != src_id and not overwrite:
        raise DataError(f"{dest}: holds a dataset prepared from {existing.get('src', 'another source')}, "
                        f"not {src_id}; pass overwrite=True to replace it")
    if existing is not None and existing.get("inputs_sha256") == inputs:
        if _intact(dest, existing, say, kw):
            return existing, True
        return None, False  # damaged: nothing of it worth keeping
    return existing, False


def _write_items(source, writer: "ShardWriter", row_of) -> None:
    """Every item of `source` through `row_of` (a row, or the reason it is rejected) into `writer`,
    from the writer's resume point on; keys seen twice are rejected after the first."""
    seen_keys: set[str] = set()
    i = -1
    for i, item in _items(source):
        if i < writer.start:  # written before a crash: only its key matters (duplicates)
            seen_keys.add(item.key)
            continue
        row = "duplicate_key" if item.key in seen_keys else row_of(item)
        seen_keys.add(item.key)  # a.jpg and a.png: the first in order wins, whatever becomes of it
        if isinstance(row, str):
            writer.reject(item, row)
        else:
            writer.add(row, next_item=i + 1)
    writer.close(next_item=i + 1)


def prepare(src: str, dest: str, *, shard_rows: int | None = None, shard_bytes: int = 256 << 20,
            row_group_rows: int = 256, min_side: int = 0, max_aspect: float | None = None,
            max_short_side: int | None = None, captions: str | None = None, image_column: str | None = None,
            key_column: str | None = None, caption_column: str | None = None, overwrite: bool = False,
            progress: bool = True, **kw) -> Manifest:
    """Images in `src` (a folder, tar shards or parquet files: `sources.py`) → parquet shards
    + manifest in `dest`. Returns the manifest.

    `kw` (endpoint_url, region) go to `storage.resolve` for both. A shard closes at
    `shard_bytes` of image bytes (default 256 MiB) or, when given, `shard_rows` rows,
    whichever comes first. A caption from `captions` (JSONL/CSV, by key) wins over one the
    source carries. `max_short_side` re-encodes larger images once (`images.py`).
    """
    _check_options(shard_rows=shard_rows, row_group_rows=row_group_rows, min_side=min_side, shard_bytes=shard_bytes,
                   max_short_side=max_short_side, max_aspect=max_aspect)
    storage.check_writable(dest, **kw)  # before any image is read, not after all of them
    source, caption_of, captions_sha256 = _open(src, captions, image_column, key_column, caption_column, kw)
    filters = {"min_side": min_side, "max_aspect": max_aspect}
    inputs = source.digest({**filters, "shard_rows": shard_rows, "shard_bytes": shard_bytes,
                            "row_group_rows": row_group_rows, "columns": [image_column, key_column, caption_column],
                            "captions_sha256": captions_sha256, "max_short_side": max_short_side})
    src_id = _source_id(src, kw)

    def say(msg: str) -> None:
        if progress:
            print(f"[prepare] {msg}", file=sys.stderr, flush=True)

    existing, finished = _previous(dest, src_id, inputs, overwrite, say, kw)
    if finished:
        return existing
    removed = storage.remove_temp_files(dest, **kw) + storage.remove_temp_files(storage.join(dest, REJECTS_DIR), **kw)
    if removed:
        say(f"removed {removed} temporary files left by an interrupted run")

    writer = ShardWriter(dest, inputs, existing=existing, shard_rows=shard_rows, shard_bytes=shard_bytes,
                         row_group_rows=row_group_rows, total=source.total, say=say, storage_kw=kw)
    _write_items(source, writer, lambda item: _row(item, min_side, max_aspect, max_short_side, caption_of))
    if not writer.shards:
        where = f"; keys and reasons in {storage.join(dest, writer.reject_files[-1])}" if writer.reject_files else ""
        kept = f"; {dest} is unchanged" if existing is not None else ""
        raise DataError(f"{src}: every image was rejected ({fmt_counts(writer.rejected)}){where}{kept}")
    manifest = writer.manifest(filters=filters, source=source.kind, src=src_id, max_short_side=max_short_side,
                               captions_from=f"--captions {captions}" if captions else source.captions_from)
    storage.write_json_atomic(storage.join(dest, MANIFEST), manifest, **kw)
    storage.delete(storage.join(dest, PROGRESS), **kw)
    _remove_unlisted(dest, manifest, kw)
    return manifest


def _intact(dest: str, existing: Manifest, say, kw: dict) -> bool:
    """The dataset already prepared from the same inputs: every shard still as recorded?"""
    problems = shard_problems(dest, existing, **kw)
    if problems:
        say(f"{dest}: {problems[0]['path']}: {problems[0]['problem']}; rebuilding")
        return False
    say(f"{dest}: up to date ({existing['rows']} rows, every shard's sha256 checked)")
    return True


def _check_options(*, max_aspect: float | None, **at_least) -> None:
    """Each option in its own name: `shard_rows: got 0, expected at least 1`."""
    lows = {"shard_rows": 1, "row_group_rows": 1, "min_side": 0, "shard_bytes": 1, "max_short_side": 8}
    for name, value in at_least.items():
        if value is not None and value < lows[name]:
            raise DataError(f"{name}: got {value}, expected at least {lows[name]}")
    if max_aspect is not None and max_aspect < 1:
        raise DataError(f"max_aspect: got {max_aspect}, expected at least 1")


class ShardWriter:
    """Accepted rows → verified parquet shards in `dest`; rejected items → `rejects/*.jsonl`.

    After every shard, `_progress.json` records what is complete, so a re-run with the same
    `inputs` picks up from the next source item (`start`). Names the `existing` dataset uses
    are never reused: it survives until the new manifest replaces it.
    """

    def __init__(self, dest: str, inputs: str, *, existing: Manifest | None, shard_rows: int | None,
                 shard_bytes: int, row_group_rows: int, total: int | None = None, say=None,
                 storage_kw: dict | None = None):
        self.dest, self.inputs, self.kw = dest, inputs, storage_kw or {}
        self.shard_rows, self.shard_bytes, self.row_group_rows = shard_rows, shard_bytes, row_group_rows
        self.total, self.say = total, say or (lambda msg: None)
        self.keep = set() if existing is None else {s["path"] for s in existing["shards"]} | set(existing.get("rejects", []))
        state = _resume_state(dest, inputs, self.kw)
        self.shards: list[ShardRecord] = state["shards"]
        self.reject_files: list[str] = state.get("rejects", [])
        self.rejected: dict[str, int] = dict(state["rejected"])
        self.captioned, self.start = state["captioned"], state["next_item"]
        self.rows: list[dict] = []
        self.size = 0  # image bytes in `rows`
        self.pending_rejects: list[dict[str, str]] = []  # since the last shard closed
        self.t0 = time.time()
        if self.start:
            self.say(f"resuming: {len(self.shards)} complete shards, from item {self.start}"
                     + (f"/{total}" if total else ""))

    def add(self, row: dict[str, Any], *, next_item: int) -> None:
        """One accepted row; the shard closes once full (`next_item`: where a re-run would go on)."""
        self.rows.append(row)
        self.size += len(row["image"])
        self.captioned += row["caption"] is not None
        if (self.shard_rows is not None and len(self.rows) >= self.shard_rows) or self.size >= self.shard_bytes:
            self.flush(next_item=next_item)

    def reject(self, item: sources.Item, reason: str) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1
        self.pending_rejects.append({"key": item.key, "source": item.source, "reason": reason})

    def flush(self, *, next_item: int) -> None:
        """Close the open shard, if it has rows: its rejects, the shard (verified), the progress record."""
        if not self.rows:
            return
        self._flush_rejects()
        index = len(self.shards)
        self.shards.append(_write_shard(self.dest, index, self.rows, self.kw, self.row_group_rows, self._name(index)))
        self.rows, self.size = [], 0
        storage.write_json_atomic(storage.join(self.dest, PROGRESS), {
            "inputs_sha256": self.inputs, "shards": self.shards, "rejected": self.rejected,
            "rejects": self.reject_files, "captioned": self.captioned, "next_item": next_item}, **self.kw)
        rate = (next_item - self.start) / max(time.time() - self.t0, 1e-6)
        total = self.total
        eta = f", ETA {(total - next_item) / rate:.0f}s" if total else ""
        self.say(f"shard {index}: {self.shards[-1]['rows']} rows, {next_item}" + (f"/{total}" if total else "")
                 + f" items, {rate:.0f} img/s{eta}")

    def close(self, *, next_item: int) -> None:
        """The last shard and any rejects after it."""
        self.flush(next_item=next_item)
        self._flush_rejects()

    def manifest(self, *, filters: dict, captions_from: str | None, source: str, src: str,
                 max_short_side: int | None) -> Manifest:
        """The manifest of what was written (the caller's facts about the source beside it)."""
        return {"schema_version": SCHEMA_VERSION, "created_by": "vlv-ray", "shards": self.shards,
                "rows": sum(s["rows"] for s in self.shards), "bytes": sum(s["bytes"] for s in self.shards),
                "filters": filters, "rejected": self.rejected, "rejects": self.reject_files,
                "captioned": self.captioned, "captions_from": captions_from, "inputs_sha256": self.inputs,
                "source": source, "src": src, "max_short_side": max_short_side}

    def _flush_rejects(self) -> None:
        if self.pending_rejects:
            name = f"{REJECTS_DIR}/{self._name(len(self.shards), 'rejects', 'jsonl')}"
            storage.write_bytes_atomic(storage.join(self.dest, name), "".join(
                json.dumps(r, ensure_ascii=False) + "\n" for r in self.pending_rejects).encode(), **self.kw)
            self.reject_files.append(name)
            self.pending_rejects = []

    def _name(self, index: int, stem: str = "shard", ext: str = "parquet") -> str:
        name = f"{stem}-{index:05d}.{ext}"
        taken = name in self.keep or f"{REJECTS_DIR}/{name}" in self.keep
        return f"{stem}-{index:05d}-{self.inputs[:8]}.{ext}" if taken else name


def _items(source: sources.Source) -> Iterator[tuple[int, sources.Item]]:
    """(index, item) pairs; a source that breaks mid-read (a truncated tar) is a DataError
    naming the file, raised after the shards before it were recorded, so a re-run resumes."""
    try:
        yield from enumerate(source.items())
    except sources.SourceError as e:
        raise DataError(str(e)) from None


def _row(item: sources.Item, min_side: int, max_aspect: float | None, max_short_side: int | None,
         caption_of: dict[str, str]) -> dict[str, Any] | str:
    """One shard row for a source item, or the reason it is rejected."""
    data = item.load()
    if data is None:
        return "unreadable"
    checked = check_image(data, min_side, max_aspect)
    if isinstance(checked, str):
        return checked
    (w, h), (ow, oh) = checked, checked
    if max_short_side is not None:
        try:
            data, w, h = bound_short_side(data, max_short_side)
        except Exception:  # check_image's cheap decode passed, the full one did not
            return "corrupt"
    caption = caption_of.get(item.key, caption_of.get(item.alias or "", item.caption))
    return {"key": item.key, "image": data, "width": w, "height": h, "source": item.source, "caption": caption,
            "orig_width": ow, "orig_height": oh}


def _source_id(src: str, kw: dict) -> str:
    """`src` as recorded in the manifest: local paths resolved, so ./img and /abs/img are one source."""
    _, path = storage.resolve(src, **kw)
    return path if "://" not in src else src.rstrip("/")


def _existing_manifest(dest: str, kw: dict) -> Manifest | None:
    """The dataset already at `dest`, if its manifest can be read."""
    if not storage.exists(storage.join(dest, MANIFEST), **kw):
        return None
    try:
        return load_manifest(dest, **kw)
    except DataError:
        return None  # unreadable: no dataset to protect


def _remove_unlisted(dest: str, manifest: Manifest, kw: dict) -> None:
    """Shards and reject files of earlier datasets at `dest`: no manifest lists them any more."""
    listed = {s["path"] for s in manifest["shards"]} | set(manifest["rejects"])
    for folder, suffix in (("", ".parquet"), (REJECTS_DIR, ".jsonl")):
        for uri in storage.list_files(storage.join(dest, folder) if folder else dest, suffix, **kw):
            name = uri.replace("\\", "/").rsplit("/", 1)[-1]
            rel = f"{folder}/{name}" if folder else name
            if name.startswith(("shard-", "rejects-")) and rel not in listed:
                storage.delete(uri, **kw)


def _resume_state(dest: str, inputs: str, kw: dict) -> dict[str, Any]:
    fresh = {"shards": [], "rejected": {}, "rejects": [], "captioned": 0, "next_item": 0}
    uri = storage.join(dest, PROGRESS)
    if not storage.exists(uri, **kw):
        return fresh
    try:
        state = storage.read_json(uri, **kw)
    except storage.NotJSON:
        return fresh
    if state.get("inputs_sha256") != inputs or "next_item" not in state:
        return fresh  # other files or options: start over rather than mix shards
    for s in state["shards"]:  # every recorded shard must still be intact
        try:
            data = storage.read_bytes(storage.join(dest, s["path"]), **kw)
        except FileNotFoundError:
            return fresh
        if hashlib.sha256(data).hexdigest() != s["sha256"]:
            return fresh
    return state
