"""Caption files for `data prepare --captions`: JSONL {"key", "caption"} per line, or CSV key,caption."""
from __future__ import annotations

import csv
import hashlib
import io
import json

from vlv_ray import storage
from vlv_ray.data.manifest import DataError


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
