"""A prepared dataset's manifest: its record types, and reading and checking a dataset.

`shards.py` writes datasets; everything that reads one (training, the latent cache,
`data inspect`) goes through `load_manifest` here and trusts only what it lists.
"""
from __future__ import annotations

import hashlib
import io
from typing import Any, Iterator, TypedDict

import pyarrow.parquet as pq

from vlv_ray import storage

SCHEMA_VERSION = 1
MANIFEST, PROGRESS = "manifest.json", "_progress.json"
REJECTS_DIR = "rejects"  # <dest>/rejects/*.jsonl: {"key", "source", "reason"} per rejected item


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
    captions_from: str  # where captions came from, in words
    inputs_sha256: str  # source file names + sizes + options: a re-run with the same inputs is a no-op
    src: str  # what it was prepared from (a resolved path or URI)
    rejects: list[str]  # files (relative) naming every rejected item with its reason
    max_short_side: int | None  # larger images re-encoded with this shorter side (None: originals)


def fmt_counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(counts.items())) or "none"


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
    except storage.NotJSON as e:
        raise DataError(str(e)) from None
    except OSError as e:  # after storage's retries: a directory in its place, access denied, …
        why = e.strerror or storage.redact(str(e)).splitlines()[0][:200]
        raise DataError(f"{m_uri}: cannot be read ({why})") from None
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


def shard_paths(uri: str, *, endpoint_url: str | None = None, region: str | None = None):
    """(filesystem, [paths within it], manifest): the shards the manifest at `uri` lists, and only
    those, as Ray Data and pyarrow read them. The one resolver: training and the latent cache."""
    kw = {"endpoint_url": endpoint_url, "region": region}
    manifest = load_manifest(uri, **kw)
    fs, _ = storage.resolve(uri, **kw)
    paths = [storage.resolve(u, **kw)[1] for u in shard_uris(uri, manifest)]
    if not paths:
        raise DataError(f"{uri}/manifest.json: lists no shards")
    return fs, paths, manifest


def shard_problems(uri: str, manifest: Manifest, **kw) -> list[dict[str, str]]:
    """Every shard whose bytes, rows or row groups no longer match its record."""
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
    return problems


def inspect(uri: str, **kw) -> dict[str, Any]:
    """Shards, rows, bytes, rejects, and whether every shard still matches its record."""
    manifest = load_manifest(uri, **kw)
    problems = shard_problems(uri, manifest, **kw)
    shards = manifest["shards"]
    return {"uri": uri, "schema_version": manifest["schema_version"], "shards": shards,
            "rows": sum(s["rows"] for s in shards), "bytes": sum(s["bytes"] for s in shards),
            "rejected": manifest.get("rejected", {}), "captioned": manifest.get("captioned"),
            "captions_from": manifest.get("captions_from"), "filters": manifest.get("filters", {}),
            "rejects": [storage.join(uri, p) for p in manifest.get("rejects", [])],
            "max_short_side": manifest.get("max_short_side"), "integrity": {"ok": not problems, "problems": problems}}


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
    if r.get("captioned") is not None:
        lines.append(f"rows with a caption: {r['captioned']} of {r['rows']}"
                     + (f" (captions from {r['captions_from']})" if r.get("captions_from") else ""))
    lines.append(f"rejected: {fmt_counts(r['rejected'])}"
                 + (f"; keys and reasons in {', '.join(r['rejects'])}" if r.get("rejects") else ""))
    # Only the image filters: the word "filters" next to a caption count misread as one.
    image_filters = {k: v for k, v in sorted(r["filters"].items()) if k in ("min_side", "max_aspect")}
    lines.append("image filters: " + ", ".join(f"{k}={'none' if v is None else v}" for k, v in image_filters.items()))
    if r.get("max_short_side"):
        lines.append(f"images with a shorter side over {r['max_short_side']} px re-encoded to it "
                     "(original sizes in orig_width, orig_height)")
    lines.append("integrity: ok" if r["integrity"]["ok"] else f"integrity: FAILED ({len(status)} shards)")
    return "\n".join(lines)


def iter_rows(uri: str, **kw) -> Iterator[dict[str, Any]]:
    """Every row of a dataset in manifest order (small datasets, tests, tools)."""
    manifest = load_manifest(uri, **kw)
    for s in shard_uris(uri, manifest):
        yield from pq.read_table(io.BytesIO(storage.read_bytes(s, **kw))).to_pylist()
