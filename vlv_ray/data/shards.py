"""Sharded image parquet: `data prepare` writes it, `data inspect` checks it.

A dataset is a folder (any storage URI) of `shard-00000.parquet`, … plus `manifest.json`.
Readers trust only the manifest, and the manifest is written last, so a half-written
shard is never read. While preparing, each shard is written, read back and hashed, then
recorded in `_progress.json`; a re-run after a crash reuses every recorded shard whose
bytes still hash the same and continues from the next source file.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from vlv_ray import storage

SCHEMA_VERSION = 1
SHARD_SCHEMA = pa.schema([
    ("key", pa.string()),
    ("image", pa.binary()),  # the original encoded bytes, never re-encoded
    ("width", pa.int32()),
    ("height", pa.int32()),
    ("source", pa.string()),
    ("caption", pa.string()),
])
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
MANIFEST, PROGRESS = "manifest.json", "_progress.json"


class DataError(ValueError):
    """A dataset or source that cannot be used, named in the message."""


# ---------------------------------------------------------------------------- reading sources


def _list_images(src: Path) -> list[Path]:
    if not src.exists():
        raise DataError(f"{src}: no such folder")
    if not src.is_dir():
        raise DataError(f"{src}: expected a folder of images")
    files = sorted(p for p in src.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"{src}: no images found (looked for {', '.join(IMAGE_SUFFIXES)}, recursively)")
    return files


def load_captions(path: str | None) -> dict[str, str]:
    """key → caption from JSONL ({"key", "caption"} per line) or CSV (key,caption)."""
    if path is None:
        return {}
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: no such captions file")
    out: dict[str, str] = {}
    if p.suffix.lower() == ".csv":
        with p.open(newline="") as f:
            for i, row in enumerate(csv.reader(f), 1):
                if i == 1 and row[:2] == ["key", "caption"]:
                    continue
                if len(row) < 2:
                    raise DataError(f"{p}: row {i}: expected key,caption")
                out[row[0]] = row[1]
        return out
    for i, line in enumerate(p.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            out[str(rec["key"])] = str(rec["caption"])
        except (json.JSONDecodeError, KeyError, TypeError):
            raise DataError(f"{p}: line {i}: expected a JSON object with 'key' and 'caption'") from None
    return out


def check_image(data: bytes, min_side: int, max_aspect: float | None) -> tuple[int, int] | str:
    """(width, height) of a usable image, or the reason it is rejected."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
            im.draft("RGB", (64, 64))  # decode at reduced scale: catches truncation cheaply
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


def _write_shard(dest: str, index: int, rows: list[dict], kw: dict) -> dict[str, Any]:
    table = pa.Table.from_pylist(rows, schema=SHARD_SCHEMA)
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="none")  # images are already compressed
    data = buf.getvalue()
    name = f"shard-{index:05d}.parquet"
    uri = storage.join(dest, name)
    storage.write_bytes_atomic(uri, data, **kw)
    # Verify what storage holds before recording the shard as complete.
    back = storage.read_bytes(uri, **kw)
    digest = hashlib.sha256(data).hexdigest()
    if hashlib.sha256(back).hexdigest() != digest or pq.read_metadata(io.BytesIO(back)).num_rows != len(rows):
        raise DataError(f"{uri}: verification after write failed (storage returned different bytes)")
    return {"path": name, "rows": len(rows), "bytes": len(data), "sha256": digest}


def prepare(src: str, dest: str, *, shard_rows: int = 10000, shard_bytes: int = 256 << 20,
            min_side: int = 0, max_aspect: float | None = None, captions: str | None = None,
            progress: bool = True, **kw) -> dict[str, Any]:
    """A folder of images → parquet shards + manifest in `dest`. Returns the manifest."""
    if shard_rows < 1:
        raise DataError(f"--shard-rows: got {shard_rows}, expected at least 1")
    if max_aspect is not None and max_aspect < 1:
        raise DataError(f"--max-aspect: got {max_aspect}, expected at least 1")
    src_path = Path(src)
    files = _list_images(src_path)
    caption_of = load_captions(captions)
    filters = {"min_side": min_side, "max_aspect": max_aspect, "captions": captions is not None}

    done = _resume_state(dest, filters, kw)
    shards, rejected = done["shards"], dict(done["rejected"])
    start = done["next_file"]
    if start and progress:
        print(f"[prepare] resuming: {len(shards)} complete shards, from file {start}/{len(files)}", file=sys.stderr)

    rows: list[dict] = []
    size = 0
    t0, seen = time.time(), 0
    for i in range(start, len(files)):
        f = files[i]
        data = f.read_bytes()
        checked = check_image(data, min_side, max_aspect)
        seen += 1
        if isinstance(checked, str):
            rejected[checked] = rejected.get(checked, 0) + 1
        else:
            key = f.relative_to(src_path).with_suffix("").as_posix()
            rows.append({"key": key, "image": data, "width": checked[0], "height": checked[1],
                         "source": str(f), "caption": caption_of.get(key)})
            size += len(data)
        last = i == len(files) - 1
        if rows and (len(rows) >= shard_rows or size >= shard_bytes or last):
            shards.append(_write_shard(dest, len(shards), rows, kw))
            rows, size = [], 0
            storage.write_json_atomic(storage.join(dest, PROGRESS), {
                "filters": filters, "shards": shards, "rejected": rejected, "next_file": i + 1}, **kw)
            if progress:
                rate = seen / max(time.time() - t0, 1e-6)
                eta = (len(files) - i - 1) / rate
                print(f"[prepare] shard {len(shards) - 1}: {shards[-1]['rows']} rows, "
                      f"{i + 1}/{len(files)} files, {rate:.0f} img/s, ETA {eta:.0f}s", file=sys.stderr)
    if not shards:
        raise DataError(f"{src}: every image was rejected ({_fmt_counts(rejected)})")
    manifest = {
        "schema_version": SCHEMA_VERSION, "created_by": "vlv-ray", "shards": shards,
        "rows": sum(s["rows"] for s in shards), "bytes": sum(s["bytes"] for s in shards),
        "filters": filters, "rejected": rejected,
    }
    storage.write_json_atomic(storage.join(dest, MANIFEST), manifest, **kw)
    _delete(storage.join(dest, PROGRESS), kw)
    return manifest


def _resume_state(dest: str, filters: dict, kw: dict) -> dict[str, Any]:
    fresh = {"shards": [], "rejected": {}, "next_file": 0}
    uri = storage.join(dest, PROGRESS)
    if not storage.exists(uri, **kw):
        return fresh
    state = storage.read_json(uri, **kw)
    if state.get("filters") != filters:
        return fresh  # different options: start over rather than mix shards
    for s in state["shards"]:  # every recorded shard must still be intact
        try:
            data = storage.read_bytes(storage.join(dest, s["path"]), **kw)
        except FileNotFoundError:
            return fresh
        if hashlib.sha256(data).hexdigest() != s["sha256"]:
            return fresh
    return state


def _delete(uri: str, kw: dict) -> None:
    fs, path = storage.resolve(uri, **kw)
    try:
        fs.delete_file(path)
    except FileNotFoundError:
        pass


def _fmt_counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(counts.items())) or "none"


# ---------------------------------------------------------------------------- reading datasets


def load_manifest(uri: str, **kw) -> dict[str, Any]:
    m_uri = storage.join(uri, MANIFEST)
    try:
        manifest = storage.read_json(m_uri, **kw)
    except FileNotFoundError:
        raise DataError(f"{m_uri}: not found; write the dataset with `vlv-ray data prepare` first") from None
    except json.JSONDecodeError as e:
        raise DataError(f"{m_uri}: not valid JSON ({e.msg} at line {e.lineno})") from None
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise DataError(f"{m_uri}: schema_version {manifest.get('schema_version')!r}, expected {SCHEMA_VERSION}")
    return manifest


def shard_uris(uri: str, manifest: dict[str, Any]) -> list[str]:
    return [storage.join(uri, s["path"]) for s in manifest["shards"]]


def inspect(uri: str, **kw) -> dict[str, Any]:
    """Shards, rows, bytes, rejects, and whether every shard still matches its sha256."""
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
    return {"uri": uri, "schema_version": manifest["schema_version"], "shards": manifest["shards"],
            "rows": manifest["rows"], "bytes": manifest["bytes"], "rejected": manifest["rejected"],
            "filters": manifest["filters"], "integrity": {"ok": not problems, "problems": problems}}


def format_inspect(r: dict[str, Any]) -> str:
    lines = [f"{r['uri']}: {len(r['shards'])} shards, {r['rows']} rows, {r['bytes'] / 1e6:.1f} MB",
             f"rejected: {_fmt_counts(r['rejected'])}",
             "integrity: ok" if r["integrity"]["ok"] else "integrity: FAILED"]
    lines += [f"  {p['path']}: {p['problem']}" for p in r["integrity"]["problems"]]
    return "\n".join(lines)


def iter_rows(uri: str, **kw) -> Iterator[dict[str, Any]]:
    """Every row of a dataset in manifest order (small datasets, tests, tools)."""
    manifest = load_manifest(uri, **kw)
    for s in shard_uris(uri, manifest):
        yield from pq.read_table(io.BytesIO(storage.read_bytes(s, **kw))).to_pylist()
