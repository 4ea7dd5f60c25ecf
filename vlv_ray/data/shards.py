"""Sharded image parquet: `data prepare` writes it, `data inspect` checks it.

A dataset is a folder (any storage URI) of `shard-00000.parquet`, … plus `manifest.json`.
Readers trust only the manifest, and the manifest is written last, so a half-written
shard is never read. While preparing, each shard is written under its final name, read
back and hashed, then recorded in `_progress.json`; a re-run after a crash reuses every
recorded shard whose bytes still hash the same and continues from the next source file.
The final manifest replaces `_progress.json`.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import sys
import time
from typing import Any, Iterator, TypedDict

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from PIL import Image

from vlv_ray import storage
from vlv_ray.data import sources
from vlv_ray.data.decode import MAX_PIXELS

SCHEMA_VERSION = 1
SHARD_SCHEMA = pa.schema([
    ("key", pa.string()),
    ("image", pa.binary()),  # the original encoded bytes, never re-encoded
    ("width", pa.int32()),
    ("height", pa.int32()),
    ("source", pa.string()),
    ("caption", pa.string()),
])
IMAGE_SUFFIXES = sources.IMAGE_SUFFIXES
MANIFEST, PROGRESS = "manifest.json", "_progress.json"


class DataError(ValueError):
    """A dataset or source that cannot be used, named in the message."""


class _ShardRequired(TypedDict):
    path: str  # relative to the dataset folder
    rows: int
    bytes: int
    sha256: str


class ShardRecord(_ShardRequired, total=False):
    row_groups: list[int]  # rows per parquet row group; older datasets lack it (one group)


class _ManifestRequired(TypedDict):
    schema_version: int
    created_by: str
    shards: list[ShardRecord]
    rows: int
    bytes: int
    filters: dict[str, Any]
    rejected: dict[str, int]  # reason → rows never written


class Manifest(_ManifestRequired, total=False):
    captioned: int  # rows with a caption
    inputs_sha256: str  # source file names + sizes + options: a re-run with the same inputs is a no-op


# ---------------------------------------------------------------------------- reading sources


def load_captions(path: str, **kw) -> tuple[dict[str, str], str]:
    """(key → caption, sha256 of the file) from JSONL ({"key", "caption"} per line) or CSV
    (key,caption), any URI."""
    try:
        raw = storage.read_bytes(path, **kw)
        text = raw.decode("utf-8")
    except FileNotFoundError:
        raise DataError(f"{path}: no such captions file") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text (byte {e.start})") from None
    out: dict[str, str] = {}
    if path.lower().endswith(".csv"):
        for i, row in enumerate(csv.reader(io.StringIO(text, newline="")), 1):
            if not row or (i == 1 and [c.strip().lower() for c in row[:2]] == ["key", "caption"]):
                continue
            if len(row) < 2:
                raise DataError(f"{path}: row {i}: expected key,caption")
            out[row[0]] = row[1]
        return out, hashlib.sha256(raw).hexdigest()
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            key, caption = rec["key"], rec["caption"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise DataError(f"{path}: line {i}: expected a JSON object with 'key' and 'caption'") from None
        if caption is None:
            continue  # an explicit null means "no caption", not the string "None"
        if not isinstance(caption, str):
            raise DataError(f"{path}: line {i}: caption must be a string, got {type(caption).__name__}")
        out[str(key)] = caption
    return out, hashlib.sha256(raw).hexdigest()


def check_image(data: bytes, min_side: int, max_aspect: float | None,
                max_pixels: int = MAX_PIXELS) -> tuple[int, int] | str:
    """(width, height) of a usable image, or the reason it is rejected.

    Cheap but real checks: JPEG is decoded at 1/8 scale (catches truncation, which
    `verify()` does not see), PNG's chunk CRCs are verified, anything else is decoded.
    """
    try:
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
            if w * h > max_pixels:
                return "bomb"
            if im.format == "JPEG":
                im.draft("RGB", (max(1, w // 8), max(1, h // 8)))
                im.load()
            elif im.format == "PNG":
                im.verify()
            else:
                im.load()
    except Image.DecompressionBombError:
        return "bomb"
    except Exception:
        return "corrupt"
    if min(w, h) < min_side:
        return "too_small"
    if max_aspect is not None and max(w / h, h / w) > max_aspect:
        return "aspect"
    return w, h


# ---------------------------------------------------------------------------- writing


def _write_shard(dest: str, index: int, rows: list[dict], kw: dict, row_group_rows: int = 256) -> ShardRecord:
    table = pa.Table.from_pylist(rows, schema=SHARD_SCHEMA)
    buf = io.BytesIO()
    # Row groups are the training reader's unit: one read task and one shuffle block each.
    pq.write_table(table, buf, compression="none", row_group_size=row_group_rows)  # images are already compressed
    data = buf.getvalue()
    name = f"shard-{index:05d}.parquet"
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


def prepare(src: str, dest: str, *, shard_rows: int | None = None, shard_bytes: int = 256 << 20,
            row_group_rows: int = 256, min_side: int = 0, max_aspect: float | None = None,
            captions: str | None = None, image_column: str | None = None, key_column: str | None = None,
            caption_column: str | None = None, progress: bool = True, **kw) -> Manifest:
    """Images in `src` (a folder, tar shards or parquet files: `sources.py`) → parquet shards
    + manifest in `dest`. Returns the manifest.

    `kw` (endpoint_url, region) go to `storage.resolve` for both. A shard closes at
    `shard_bytes` of image bytes (default 256 MiB) or, when given, `shard_rows` rows,
    whichever comes first. A caption from `captions` (JSONL/CSV, by key) wins over one the
    source carries.
    """
    for flag, value, low in (("--shard-rows", shard_rows, 1), ("--row-group-rows", row_group_rows, 1),
                             ("--min-side", min_side, 0), ("--shard-mb", shard_bytes, 1)):
        if value is not None and value < low:
            raise DataError(f"{flag}: got {value}, expected at least {low}")
    if max_aspect is not None and max_aspect < 1:
        raise DataError(f"--max-aspect: got {max_aspect}, expected at least 1")
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
    filters = {"min_side": min_side, "max_aspect": max_aspect, "captions": captions is not None}
    inputs = source.digest({**filters, "shard_rows": shard_rows, "shard_bytes": shard_bytes,
                            "row_group_rows": row_group_rows, "columns": [image_column, key_column, caption_column],
                            "captions_sha256": captions_sha256})

    def say(msg: str) -> None:
        if progress:
            print(f"[prepare] {msg}", file=sys.stderr, flush=True)

    finished = _finished_manifest(dest, inputs, kw)
    if finished is not None:
        say(f"{dest}: up to date ({finished['rows']} rows); delete its manifest.json to rebuild")
        return finished
    # Shards are about to be rewritten under the same names: take down any old manifest
    # first, so no reader trusts it while they change.
    storage.delete(storage.join(dest, MANIFEST), **kw)

    state = _resume_state(dest, inputs, kw)
    shards: list[ShardRecord] = state["shards"]
    rejected: dict[str, int] = dict(state["rejected"])
    captioned, start = state["captioned"], state["next_item"]
    total = source.total
    if start:
        say(f"resuming: {len(shards)} complete shards, from item {start}" + (f"/{total}" if total else ""))

    seen_keys: set[str] = set()
    rows: list[dict] = []
    size, t0, i = 0, time.time(), -1

    def close_shard(next_item: int) -> None:
        nonlocal rows, size
        shards.append(_write_shard(dest, len(shards), rows, kw, row_group_rows))
        rows, size = [], 0
        storage.write_json_atomic(storage.join(dest, PROGRESS), {
            "inputs_sha256": inputs, "shards": shards, "rejected": rejected,
            "captioned": captioned, "next_item": next_item}, **kw)
        rate = (next_item - start) / max(time.time() - t0, 1e-6)
        eta = f", ETA {(total - next_item) / rate:.0f}s" if total else ""
        say(f"shard {len(shards) - 1}: {shards[-1]['rows']} rows, {next_item}" + (f"/{total}" if total else "")
            + f" items, {rate:.0f} img/s{eta}")

    for i, item in _items(source):
        if i < start:  # written before a crash: only its key matters (duplicates)
            seen_keys.add(item.key)
            continue
        row = "duplicate_key" if item.key in seen_keys else _row(item, min_side, max_aspect, caption_of)
        seen_keys.add(item.key)  # a.jpg and a.png: the first in order wins, whatever becomes of it
        if isinstance(row, str):
            rejected[row] = rejected.get(row, 0) + 1
        else:
            rows.append(row)
            size += len(row["image"])
            captioned += row["caption"] is not None
        if rows and ((shard_rows is not None and len(rows) >= shard_rows) or size >= shard_bytes):
            close_shard(i + 1)
    if rows:
        close_shard(i + 1)
    if not shards:
        raise DataError(f"{src}: every image was rejected ({_fmt_counts(rejected)})")
    manifest: Manifest = {
        "schema_version": SCHEMA_VERSION, "created_by": "vlv-ray", "shards": shards,
        "rows": sum(s["rows"] for s in shards), "bytes": sum(s["bytes"] for s in shards),
        "filters": filters, "rejected": rejected, "captioned": captioned, "inputs_sha256": inputs,
        "source": source.kind,
    }
    storage.write_json_atomic(storage.join(dest, MANIFEST), manifest, **kw)
    storage.delete(storage.join(dest, PROGRESS), **kw)
    return manifest


def _items(source: sources.Source) -> Iterator[tuple[int, sources.Item]]:
    """(index, item) pairs; a source that breaks mid-read (a truncated tar) is a DataError
    naming the file, raised after the shards before it were recorded, so a re-run resumes."""
    try:
        yield from enumerate(source.items())
    except sources.SourceError as e:
        raise DataError(str(e)) from None


def _row(item: sources.Item, min_side: int, max_aspect: float | None,
         caption_of: dict[str, str]) -> dict[str, Any] | str:
    """One shard row for a source item, or the reason it is rejected."""
    data = item.load()
    if data is None:
        return "unreadable"
    checked = check_image(data, min_side, max_aspect)
    if isinstance(checked, str):
        return checked
    caption = caption_of.get(item.key, caption_of.get(item.alias or "", item.caption))
    return {"key": item.key, "image": data, "width": checked[0], "height": checked[1],
            "source": item.source, "caption": caption}


def _finished_manifest(dest: str, inputs: str, kw: dict) -> Manifest | None:
    """The existing manifest if it was made from these same inputs and its shards are all there."""
    uri = storage.join(dest, MANIFEST)
    if not storage.exists(uri, **kw):
        return None
    try:
        manifest = storage.read_json(uri, **kw)
    except ValueError:
        return None
    if not isinstance(manifest, dict) or manifest.get("inputs_sha256") != inputs:
        return None
    fs, _ = storage.resolve(dest, **kw)
    for s in manifest.get("shards", []):
        info = fs.get_file_info(storage.resolve(storage.join(dest, s["path"]), **kw)[1])
        if info.type != pafs.FileType.File or info.size != s["bytes"]:
            return None
    return manifest


def _resume_state(dest: str, inputs: str, kw: dict) -> dict[str, Any]:
    fresh = {"shards": [], "rejected": {}, "captioned": 0, "next_item": 0}
    uri = storage.join(dest, PROGRESS)
    if not storage.exists(uri, **kw):
        return fresh
    try:
        state = storage.read_json(uri, **kw)
    except ValueError:
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


def _fmt_counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(counts.items())) or "none"


# ---------------------------------------------------------------------------- reading datasets


def load_manifest(uri: str, **kw) -> Manifest:
    """The dataset's manifest, checked enough that readers can rely on its shard list."""
    m_uri = storage.join(uri, MANIFEST)
    try:
        manifest = storage.read_json(m_uri, **kw)
    except FileNotFoundError:
        if storage.exists(storage.join(uri, PROGRESS), **kw):
            raise DataError(f"{m_uri}: not found; `vlv-ray data prepare` did not finish "
                            f"({PROGRESS} is there): run it again to resume") from None
        raise DataError(f"{m_uri}: not found; run `vlv-ray data prepare` first") from None
    except json.JSONDecodeError as e:
        raise DataError(f"{m_uri}: not valid JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(manifest, dict):
        raise DataError(f"{m_uri}: expected a JSON object")
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise DataError(f"{m_uri}: schema_version {manifest.get('schema_version')!r}, expected {SCHEMA_VERSION}")
    # Only what readers rely on is required; the other fields are descriptive.
    if not isinstance(manifest.get("shards"), list):
        raise DataError(f"{m_uri}: missing key 'shards' (a list of shard records)")
    for i, s in enumerate(manifest["shards"]):
        if not isinstance(s, dict) or not all(k in s for k in _ShardRequired.__annotations__):
            raise DataError(f"{m_uri}: shards[{i}]: expected path, rows, bytes and sha256")
    return manifest


def shard_uris(uri: str, manifest: Manifest) -> list[str]:
    return [storage.join(uri, s["path"]) for s in manifest["shards"]]


def inspect(uri: str, **kw) -> dict[str, Any]:
    """Shards, rows, bytes, rejects, and whether every shard still matches its record."""
    manifest = load_manifest(uri, **kw)
    problems = []
    for s in manifest["shards"]:
        try:
            data = storage.read_bytes(storage.join(uri, s["path"]), **kw)
        except FileNotFoundError:
            problems.append({"path": s["path"], "problem": "missing"})
            continue
        if hashlib.sha256(data).hexdigest() != s["sha256"]:
            problems.append({"path": s["path"], "problem": "sha256 mismatch"})
            continue
        meta = pq.read_metadata(io.BytesIO(data))  # matching hash, but a hand-edited manifest?
        if meta.num_rows != s["rows"]:
            problems.append({"path": s["path"], "problem": f"{meta.num_rows} rows, manifest says {s['rows']}"})
            continue
        groups = [meta.row_group(g).num_rows for g in range(meta.num_row_groups)]
        if "row_groups" in s and s["row_groups"] != groups:
            problems.append({"path": s["path"], "problem": f"row groups {groups}, manifest says {s['row_groups']}"})
    shards = manifest["shards"]
    return {"uri": uri, "schema_version": manifest["schema_version"], "shards": shards,
            "rows": sum(s["rows"] for s in shards), "bytes": sum(s["bytes"] for s in shards),
            "rejected": manifest.get("rejected", {}), "captioned": manifest.get("captioned"),
            "filters": manifest.get("filters", {}),
            "integrity": {"ok": not problems, "problems": problems}}


def format_inspect(r: dict[str, Any], max_rows: int = 20) -> str:
    """A table for people: one line per shard (problem shards always shown), then totals."""
    status = {p["path"]: p["problem"] for p in r["integrity"]["problems"]}
    shown = [s for i, s in enumerate(r["shards"]) if i < max_rows or s["path"] in status]
    width = max([len("shard")] + [len(s["path"]) for s in shown])
    lines = [f"{r['uri']}  (schema v{r['schema_version']})",
             f"{'shard':<{width}}  {'rows':>9}  {'MB':>9}  status"]
    lines += [f"{s['path']:<{width}}  {s['rows']:>9}  {s['bytes'] / 1e6:>9.2f}  {status.get(s['path'], 'ok')}"
              for s in shown]
    if len(shown) < len(r["shards"]):
        lines.append(f"… {len(r['shards']) - len(shown)} more shards, all ok")
    lines.append(f"{'total: ' + str(len(r['shards'])) + ' shards':<{width}}  {r['rows']:>9}  {r['bytes'] / 1e6:>9.2f}")
    if r["filters"].get("captions") and r.get("captioned") is not None:
        lines.append(f"captioned: {r['captioned']} of {r['rows']} rows")
    lines.append(f"rejected: {_fmt_counts(r['rejected'])}")
    lines.append(f"filters: {', '.join(f'{k}={v}' for k, v in sorted(r['filters'].items()))}")
    lines.append("integrity: ok" if r["integrity"]["ok"] else f"integrity: FAILED ({len(status)} shards)")
    return "\n".join(lines)


def iter_rows(uri: str, **kw) -> Iterator[dict[str, Any]]:
    """Every row of a dataset in manifest order (small datasets, tests, tools)."""
    manifest = load_manifest(uri, **kw)
    for s in shard_uris(uri, manifest):
        yield from pq.read_table(io.BytesIO(storage.read_bytes(s, **kw))).to_pylist()
