"""Storage URIs → filesystems. The one place that knows about schemes and endpoints.

Everything is `pyarrow.fs`: Ray Data's `read_parquet`, Ray Train's `RunConfig` and our own
shard writer all accept a pyarrow filesystem, so one object serves data, checkpoints
and manifests. Credentials come only from the environment (pyarrow reads the usual
`AWS_*` variables and GCP application-default credentials); they are never arguments,
never logged.
"""
from __future__ import annotations

import json
import os
import posixpath
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pyarrow.fs as pafs

SCHEMES = ("local path", "file://", "s3://", "gs://")
SECRET_ENV = ("AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "AWS_SESSION_TOKEN", "WANDB_API_KEY")


class StorageError(ValueError):
    """A URI this project cannot use."""


def resolve(uri: str, *, endpoint_url: str | None = None,
            region: str | None = None) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path within it) for a local path, file://, s3:// or gs:// URI."""
    if not uri:
        raise StorageError("empty storage URI; expected a local path, file://, s3:// or gs://")
    parsed = urlparse(uri)
    scheme = parsed.scheme.lower()
    if scheme in ("", "file") or (len(scheme) == 1 and uri[1:3] == ":\\"):
        path = parsed.path if scheme == "file" else uri
        return pafs.LocalFileSystem(), str(Path(path).expanduser().resolve())
    if scheme == "s3":
        return _s3(endpoint_url, region), f"{parsed.netloc}{parsed.path}".rstrip("/")
    if scheme in ("gs", "gcs"):
        return pafs.GcsFileSystem(), f"{parsed.netloc}{parsed.path}".rstrip("/")
    raise StorageError(f"{uri}: unsupported scheme '{scheme}://'; expected one of {', '.join(SCHEMES)}")


def _s3(endpoint_url: str | None, region: str | None) -> pafs.S3FileSystem:
    endpoint = endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    region = region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    kw: dict[str, Any] = {"retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=10)}
    if endpoint:
        parsed = urlparse(endpoint)
        kw["endpoint_override"] = parsed.netloc or parsed.path
        kw["scheme"] = parsed.scheme or "https"
        region = region or "us-east-1"  # S3-compatible stores ignore it, but pyarrow wants one
    if region:
        kw["region"] = region
    return pafs.S3FileSystem(**kw)


def join(uri: str, *parts: str) -> str:
    if "://" in uri:
        return posixpath.join(uri.rstrip("/"), *parts)
    return str(Path(uri, *parts))


def exists(uri: str, **kw) -> bool:
    fs, path = resolve(uri, **kw)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def read_bytes(uri: str, **kw) -> bytes:
    fs, path = resolve(uri, **kw)
    try:
        with fs.open_input_stream(path) as f:
            return f.read()
    except FileNotFoundError:
        raise FileNotFoundError(2, "not found", uri) from None


def write_bytes_atomic(uri: str, data: bytes, **kw) -> None:
    """Readers see the old object or the whole new one, never a prefix.

    Object stores give that for a single PUT; on a local disk we write a temporary file
    and rename it over the target.
    """
    fs, path = resolve(uri, **kw)
    if isinstance(fs, pafs.LocalFileSystem):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        return
    with fs.open_output_stream(path) as f:
        f.write(data)


def read_json(uri: str, **kw) -> Any:
    return json.loads(read_bytes(uri, **kw))


def write_json_atomic(uri: str, obj: Any, **kw) -> None:
    write_bytes_atomic(uri, json.dumps(obj, indent=1, sort_keys=True).encode(), **kw)


def list_files(uri: str, suffix: str = "", **kw) -> list[str]:
    fs, path = resolve(uri, **kw)
    if fs.get_file_info(path).type == pafs.FileType.NotFound:
        return []
    infos = fs.get_file_info(pafs.FileSelector(path, recursive=False))
    return sorted(join(uri, posixpath.basename(i.path)) for i in infos
                  if i.type == pafs.FileType.File and i.path.endswith(suffix))


def redact(text: str) -> str:
    """Mask the values of secret environment variables wherever they appear in `text`."""
    for name in SECRET_ENV:
        value = os.environ.get(name)
        if value and len(value) >= 4:
            text = text.replace(value, "***")
    return text
