"""Where `data prepare` reads images from: a folder tree, webdataset-style tar shards, or
parquet files with an image-bytes column (LAION/HF style). Local paths or storage URIs.

Each source yields `Item`s in one fixed order (sorted files, then file order), so a
re-run after a crash can skip the items already written by counting them. Nothing is
loaded whole: tar files are streamed member by member, parquet files by row batches.
"""
from __future__ import annotations

import hashlib
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Iterator

import pyarrow.fs as pafs

from vlv_ray import storage

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
IMAGE_COLUMNS = ("image", "jpg", "png", "bytes", "img")  # tried in order when --image-column is not given
# Tried in order when --caption-column is not given: our name, Hugging Face's, LAION's, webdataset's.
CAPTION_COLUMNS = ("caption", "text", "TEXT", "txt")


class SourceError(ValueError):
    """A source that cannot be read as asked, named in the message."""


@dataclass
class Item:
    key: str
    load: Callable[[], bytes | None]  # None: the bytes could not be read (a reject, not a crash)
    caption: str | None
    source: str
    alias: str | None = None  # another name a captions file may use (a folder image's path with extension)


@dataclass
class Source:
    kind: str  # "folder" | "tar" | "parquet"
    files: list[str]  # what it reads, in order
    sizes: list[int]
    total: int | None  # items, when known without reading everything
    items: Callable[[], Iterator[Item]]
    captions_from: str | None = None  # where captions come from, in words, for the summary

    def digest(self, options: dict[str, Any]) -> str:
        """What a dataset was made from: file names, sizes and options (not contents: hashing
        every image would cost as much as preparing again)."""
        h = hashlib.sha256(json.dumps({**options, "kind": self.kind}, sort_keys=True).encode())
        for f, n in zip(self.files, self.sizes):
            h.update(f"{f}\t{n}\n".encode())
        return h.hexdigest()


def open_source(src: str, *, image_column: str | None = None, key_column: str | None = None,
                caption_column: str | None = None, **kw) -> Source:
    """The source at `src`: a .tar or .parquet file, or a folder of images, of .tar or of .parquet files."""
    lower = src.lower().rstrip("/")
    if lower.endswith(".tar"):
        return _tar_source([src], None, **kw)
    if lower.endswith(".parquet"):
        return _parquet_source([src], image_column, key_column, caption_column, **kw)
    if "://" not in src:
        p = Path(src)
        if not p.exists():
            raise SourceError(f"{src}: no such folder")
        if not p.is_dir():
            raise SourceError(f"{src}: expected a folder (of images, .tar or .parquet files), a .tar or a .parquet file")
    files = _walk(src, kw)
    tars = [f for f in files if f.uri.lower().endswith(".tar")]
    parquets = [f.uri for f in files if f.uri.lower().endswith(".parquet")]
    images = [f for f in files if f.uri.lower().endswith(IMAGE_SUFFIXES)]
    if images:
        return _folder_source(src, images, **kw)
    if tars:
        return _tar_source([f.uri for f in tars], [f.size for f in tars], **kw)
    if parquets:
        return _parquet_source(parquets, image_column, key_column, caption_column, **kw)
    raise SourceError(f"{src}: no images found (looked for {', '.join(IMAGE_SUFFIXES)}, .tar and .parquet, "
                      "recursively)")


@dataclass
class _File:
    uri: str
    path: str  # within the filesystem
    size: int


def _walk(src: str, kw: dict) -> list[_File]:
    """Every file below `src`, recursively, sorted: one listing, sizes included."""
    fs, path = storage.resolve(src, **kw)
    if fs.get_file_info(path).type != pafs.FileType.Directory:
        raise SourceError(f"{src}: no such folder")
    root = path.rstrip("/")
    return sorted((_File(storage.join(src, i.path[len(root):].lstrip("/")), i.path, i.size)
                   for i in fs.get_file_info(pafs.FileSelector(path, recursive=True))
                   if i.type == pafs.FileType.File), key=lambda f: f.uri)


# ---------------------------------------------------------------------------- folder of images


def _folder_source(src: str, files: list[_File], **kw) -> Source:
    fs, root = storage.resolve(src, **kw)
    rels = [f.path[len(root.rstrip("/")):].lstrip("/") for f in files]

    def load(f: _File) -> Callable[[], bytes | None]:
        def read() -> bytes:
            with fs.open_input_stream(f.path) as stream:
                return stream.read()

        def load_or_none() -> bytes | None:
            try:
                return storage.retry_reads(read, f.uri)
            except OSError:
                return None
        return load_or_none

    def items() -> Iterator[Item]:
        for f, rel in zip(files, rels):
            yield Item(str(PurePosixPath(rel).with_suffix("")), load(f), None, f.uri, alias=rel)

    return Source("folder", rels, [f.size for f in files], len(files), items, None)


# ---------------------------------------------------------------------------- webdataset tar


def _tar_source(tars: list[str], sizes: list[int] | None, **kw) -> Source:
    """`sizes`: the tars' sizes when a listing gave them, else they are looked up (one file)."""
    if sizes is None:
        fs, path = storage.resolve(tars[0], **kw)
        info = fs.get_file_info(path)
        if info.size is None:
            raise SourceError(f"{tars[0]}: no such file")
        sizes = [info.size]

    def items() -> Iterator[Item]:
        for t in tars:
            yield from _tar_items(t, kw)

    return Source("tar", tars, sizes, None, items, "each member's .txt, else the caption in its .json")


def _tar_items(uri: str, kw: dict) -> Iterator[Item]:
    """Members grouped by key (the path without its extension), as webdataset writes them."""
    fs, path = storage.resolve(uri, **kw)
    group: dict[str, bytes] = {}
    key = None
    try:
        with fs.open_input_stream(path) as stream, tarfile.open(fileobj=stream, mode="r|*") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                name = PurePosixPath(member.name)
                stem, _, ext = name.name.partition(".")  # webdataset: the key ends at the first dot
                k = stem if str(name.parent) == "." else f"{name.parent}/{stem}"
                if key is not None and k != key:
                    yield _tar_item(key, group, uri)
                    group = {}
                key = k
                f = tar.extractfile(member)
                group[ext.lower()] = f.read() if f else b""
    except (tarfile.TarError, EOFError, OSError) as e:
        raise SourceError(f"{uri}: not a readable tar file ({type(e).__name__}: {e})") from None
    if key is not None:
        yield _tar_item(key, group, uri)


def _tar_item(key: str, group: dict[str, bytes], uri: str) -> Item:
    image = next((group[s[1:]] for s in IMAGE_SUFFIXES if s[1:] in group), None)
    caption = None
    if "txt" in group:
        caption = group["txt"].decode("utf-8", "replace").strip() or None
    elif "json" in group:
        try:
            meta = json.loads(group["json"])
            caption = meta.get("caption") if isinstance(meta, dict) and isinstance(meta.get("caption"), str) else None
        except (json.JSONDecodeError, UnicodeDecodeError):
            caption = None
    return Item(key, lambda: image, caption, f"{uri}#{key}")


# ---------------------------------------------------------------------------- parquet with image bytes


def _parquet_source(files: list[str], image_column: str | None, key_column: str | None,
                    caption_column: str | None, **kw) -> Source:
    import pyarrow.parquet as pq

    fs, _ = storage.resolve(files[0], **kw)
    sizes, rows, plans = [], 0, []
    described: dict[str, list[str]] = {}  # caption column → the files that use it
    for f in files:
        path = storage.resolve(f, **kw)[1]
        try:
            with fs.open_input_file(path) as fh:
                pf = pq.ParquetFile(fh)
                schema, n = pf.schema_arrow, pf.metadata.num_rows
        except FileNotFoundError:
            raise SourceError(f"{f}: no such file") from None
        except Exception as e:  # pyarrow raises ArrowInvalid and friends for a bad footer
            raise SourceError(f"{f}: not a readable parquet file ({type(e).__name__})") from None
        names = schema.names
        image = image_column or next((c for c in IMAGE_COLUMNS if c in names), None)
        if image is None or image not in names:
            wanted = f"column {image_column!r}" if image_column else f"an image column ({', '.join(IMAGE_COLUMNS)})"
            raise SourceError(f"{f}: no {wanted}; its columns: {', '.join(names)} (set image_column=NAME)")
        for opt, col in (("key_column", key_column), ("caption_column", caption_column)):
            if col is not None and col not in names:
                raise SourceError(f"{f}: no column {col!r} ({opt}={col}); its columns: {', '.join(names)}")
        key = key_column or ("key" if "key" in names else None)
        caption = caption_column or next((c for c in CAPTION_COLUMNS if c in names), None)
        plans.append((f, path, image, key, caption))
        described.setdefault(f"column {caption!r}" if caption else "no column", []).append(
            f"{PurePosixPath(f).name} (columns: {', '.join(names)})")
        sizes.append(fs.get_file_info(path).size)
        rows += n

    def items() -> Iterator[Item]:
        for f, path, image, key, caption in plans:
            with fs.open_input_file(path) as fh:
                pf = pq.ParquetFile(fh)
                cols = [c for c in (image, key, caption) if c]
                stem, i = PurePosixPath(f).stem, 0
                for batch in pf.iter_batches(batch_size=256, columns=cols):
                    d = batch.to_pydict()
                    for j in range(batch.num_rows):
                        k = str(d[key][j]) if key and d[key][j] is not None else f"{stem}/{i}"
                        c = d[caption][j] if caption else None
                        yield Item(k, _image_loader(d[image][j], f, kw), c if isinstance(c, str) and c.strip() else None,
                                   f"{f}#{i}")
                        i += 1

    captions_from = "; ".join(f"{col} of {fs_[0]}" + (f" and {len(fs_) - 1} more files" if len(fs_) > 1 else "")
                              for col, fs_ in described.items())
    return Source("parquet", files, sizes, rows, items, captions_from)


def _image_loader(value: Any, parquet_uri: str, kw: dict) -> Callable[[], bytes | None]:
    """How to get a row's image: raw bytes, or an HF `Image` struct {"bytes": …, "path": …}.

    `datasets` writes a struct with only a `path` for images it opened from files: that path
    is read from storage, as given when absolute or a URI, else relative to the parquet file.
    """
    if isinstance(value, (bytes, bytearray)):
        return lambda: bytes(value)
    if isinstance(value, dict) and isinstance(value.get("bytes"), (bytes, bytearray)):
        return lambda: bytes(value["bytes"])
    if isinstance(value, dict) and isinstance(value.get("path"), str) and value["path"]:
        path = value["path"]
        if "://" not in path and not PurePosixPath(path).is_absolute():
            path = storage.join(parquet_uri.rsplit("/", 1)[0] if "/" in parquet_uri else ".", path)

        def read() -> bytes | None:
            try:
                return storage.read_bytes(path, **kw)
            except (OSError, ValueError):  # missing, denied, a bad URI: this row is unreadable
                return None
        return read
    return lambda: None
