"""Whether a checkpoint directory in storage is whole, and keeping only whole ones.

A checkpoint is whole when its `_COMPLETE` marker exists and every file the marker lists
is in storage with the size recorded at save time. The marker is written by rank 0 only
after every rank has confirmed its own upload (checkpoint.save), so a rank killed half-way
through a save leaves a directory without a marker, never a marker over missing files.
Sizes catch a truncated file or a lost shard; checksums would mean reading every byte of
every rank's optimizer state at each save and resume, which costs minutes at paper scale.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

from vlv_ray import storage

COMPLETE = "_COMPLETE"
STATE_FILE = "trainer_state.json"
DIR_RE = re.compile(r"^step-(\d{8})$")


def staged_files(staging: Path) -> dict[str, int]:
    """{relative path: size} of everything a rank is about to upload."""
    return {p.relative_to(staging).as_posix(): p.stat().st_size for p in staging.rglob("*") if p.is_file()}


def listing(uri: str, **kw) -> dict[str, int]:
    """{relative path: size} of every file under `uri` in storage."""
    fs, root = storage.resolve(uri, **kw)
    if fs.get_file_info(root).type != pafs.FileType.Directory:
        return {}
    infos = storage.retry_reads(lambda: fs.get_file_info(pafs.FileSelector(root, recursive=True)), uri)
    return {i.path[len(root):].lstrip("/"): i.size for i in infos if i.type == pafs.FileType.File}


def step_dirs(run: str, **kw) -> list[tuple[int, str]]:
    """(step, uri) of every `step-NNNNNNNN` directory of the run, newest first."""
    fs, root = storage.resolve(run, **kw)
    if fs.get_file_info(root).type != pafs.FileType.Directory:
        return []
    infos = fs.get_file_info(pafs.FileSelector(root))
    found = [(int(m.group(1)), storage.join(run, Path(i.path).name)) for i in infos
             if i.type == pafs.FileType.Directory and (m := DIR_RE.match(Path(i.path).name))]
    return sorted(found, reverse=True)


def problem(uri: str, **kw) -> str | None:
    """Why the checkpoint at `uri` cannot be resumed from, or None when it is whole."""
    have = listing(uri, **kw)
    if COMPLETE not in have:
        return f"no {COMPLETE} marker (its save did not finish)"
    try:
        marker = storage.read_json(storage.join(uri, COMPLETE), **kw)
    except (OSError, ValueError) as e:
        return f"unreadable {COMPLETE} marker ({type(e).__name__})"
    # Markers written before the file list was recorded: the state file is all we can check.
    expected: dict[str, Any] = marker.get("files") or {STATE_FILE: None}
    missing = sorted(f for f in expected if f not in have)
    if missing:
        return f"{missing[0]} is missing" + (f" (and {len(missing) - 1} more files)" if len(missing) > 1 else "")
    wrong = sorted(f for f, size in expected.items() if size is not None and have[f] != size)
    if wrong:
        f = wrong[0]
        return f"{f} has {have[f]} bytes, {expected[f]} were written" + (
            f" (and {len(wrong) - 1} more files)" if len(wrong) > 1 else "")
    return None


def write_marker(uri: str, step: int, files: dict[str, int], **kw) -> None:
    """Rank 0, after every rank's upload: check the files really are there, then mark whole."""
    have = listing(uri, **kw)
    bad = sorted(f for f, size in files.items() if have.get(f) != size)
    if bad:
        raise RuntimeError(f"{uri}: after every rank's upload, {bad[0]} is missing or of the wrong size in storage"
                           f" ({len(bad)} files); the checkpoint is not marked complete")
    storage.write_json_atomic(storage.join(uri, COMPLETE), {"step": step, "files": files}, **kw)


def read_state(uri: str, **kw) -> dict[str, Any]:
    return json.loads(storage.read_bytes(storage.join(uri, STATE_FILE), **kw))


def remove(uri: str, **kw) -> None:
    fs, path = storage.resolve(uri, **kw)
    try:
        fs.delete_dir(path)
    except FileNotFoundError:
        pass


def prune(run: str, keep: int, **kw) -> list[str]:
    """Delete all but the newest `keep` marked checkpoints, and unmarked directories older
    than the newest marked one (left by a crashed save). Returns the deleted URIs."""
    marked, dropped = 0, []
    for _, uri in step_dirs(run, **kw):
        if storage.exists(storage.join(uri, COMPLETE), **kw):
            marked += 1
            if marked <= keep:
                continue
        elif marked == 0:
            continue  # newer than every marked one: only a save in flight could own it
        remove(uri, **kw)
        dropped.append(uri)
    return dropped
