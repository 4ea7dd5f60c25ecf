"""Storage URIs → filesystems. The one place that knows about schemes and endpoints.

Everything is `pyarrow.fs`: Ray Data's `read_parquet`, Ray Train's `RunConfig` and our own
shard writer all accept a pyarrow filesystem, so one object serves data, checkpoints
and manifests. Credentials come only from the environment (pyarrow reads the usual
`AWS_*` variables and GCP application-default credentials); they are never arguments,
never logged, and never baked into the filesystem object that Ray pickles to workers.
"""
from __future__ import annotations

import errno
import functools
import json
import os
import posixpath
import re
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Callable, TypeVar
from urllib.parse import urlparse

import pyarrow.fs as pafs

SCHEMES = ("local path", "file://", "s3://", "gs://")
# Environment variables that hold credentials: never written to a file, never logged, not
# forwarded to Ray jobs unless asked. GOOGLE_APPLICATION_CREDENTIALS names a key file (or,
# in some CI, holds the JSON inline); `redact` masks the secret fields inside it.
SECRET_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "WANDB_API_KEY", "HF_TOKEN",
              "GOOGLE_APPLICATION_CREDENTIALS")
_GCP_ENV = "GOOGLE_APPLICATION_CREDENTIALS"
# `scheme://user:password@host`: credentials embedded in a URL (an endpoint, a proxy).
_URL_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/@\s]+@")
# Fields of a GCP credentials JSON that must never reach a log.
GCP_SECRET_FIELDS = ("private_key", "private_key_id", "client_secret", "refresh_token")


T = TypeVar("T")


class StorageError(ValueError):
    """A URI this project cannot use."""


def resolve(uri: str, *, endpoint_url: str | None = None,
            region: str | None = None) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path within it) for a local path, file://, s3:// or gs:// URI."""
    if not uri:
        raise StorageError("empty storage URI; expected a local path, file://, s3:// or gs://")
    parsed = urlparse(uri)
    scheme = parsed.scheme.lower()
    if scheme == "" or (len(scheme) == 1 and uri[1:3] in (":\\", ":/")):  # C:\data is a path
        return pafs.LocalFileSystem(), str(Path(uri).expanduser().resolve())
    if scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise StorageError(f"{uri}: file:// URIs take an absolute path (file:///abs/path), "
                               f"not a host '{parsed.netloc}'")
        return pafs.LocalFileSystem(), str(Path(parsed.path).resolve())
    if scheme in ("s3", "gs", "gcs"):
        if not parsed.netloc:
            raise StorageError(f"{uri}: no bucket; expected {scheme}://BUCKET/PREFIX")
        path = f"{parsed.netloc}{parsed.path}".rstrip("/")
        return (_s3(endpoint_url, region) if scheme == "s3" else pafs.GcsFileSystem()), path
    raise StorageError(f"{uri}: unsupported scheme '{scheme}://'; expected one of {', '.join(SCHEMES)}")


S3_ATTEMPTS = 10  # per request: 503 SlowDown, 5xx, dropped or refused connections, with backoff


class S3(pafs.S3FileSystem):
    """pyarrow's S3 filesystem with our retry policy, kept when Ray pickles it to workers.

    pyarrow's own pickling drops `retry_strategy`, so a worker's copy would fall back to 3
    attempts. Credentials are not in the pickle either way: each process reads its own
    environment or instance profile.
    """

    def __init__(self, endpoint: str | None, scheme: str, region: str | None, attempts: int = S3_ATTEMPTS):
        self._args = (endpoint, scheme, region, attempts)
        kw: dict[str, Any] = {"retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=attempts),
                              "scheme": scheme}
        if endpoint:
            kw["endpoint_override"] = endpoint
        if region:
            kw["region"] = region
        super().__init__(**kw)

    def __reduce__(self):
        return (S3, self._args)


def _s3(endpoint_url: str | None, region: str | None) -> S3:
    endpoint = endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    region = region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if not endpoint:
        return S3(None, "https", region, S3_ATTEMPTS)
    parsed = urlparse(endpoint if "://" in endpoint else f"https://{endpoint}")
    # http for a local MinIO/moto, https otherwise; S3-compatible stores ignore the region
    # but the SDK wants one.
    return S3(parsed.netloc, parsed.scheme, region or "us-east-1", S3_ATTEMPTS)


def join(uri: str, *parts: str) -> str:
    """`uri` / parts, keeping the scheme. Parts are relative: leading slashes are dropped."""
    parts = tuple(p.lstrip("/") for p in parts)
    if "://" in uri:
        return posixpath.join(uri.rstrip("/"), *parts)
    return str(Path(uri, *parts))


def on_object_store(uri: str) -> bool:
    """Whether `uri` names an object store (s3://, gs://), not a disk of this machine."""
    return urlparse(uri).scheme.lower() in ("s3", "gs", "gcs")


def exists(uri: str, **kw) -> bool:
    fs, path = resolve(uri, **kw)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


READ_ATTEMPTS = 5
# Local errors that a retry cannot heal (a path under a regular file, a read-only disk, …).
# pyarrow reports them as a plain OSError carrying the errno, so the type alone does not tell.
PERMANENT_ERRNOS = (errno.ENOTDIR, errno.EISDIR, errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOENT,
                    errno.ENAMETOOLONG, errno.ELOOP)


# How the AWS SDK (curl) reports a host name that does not resolve. It has retried S3_ATTEMPTS
# times with backoff by then (≈ 90 s); READ_ATTEMPTS more would make a typo wait 8 minutes.
_UNRESOLVED = re.compile(r"curlCode: 6\b|Could not resolve host", re.IGNORECASE)


def retry_reads(fn: Callable[[], T], what: str, attempts: int = READ_ATTEMPTS) -> T:
    """`fn()` (an idempotent read), again after a transient I/O error, with backoff.

    The S3 SDK retries 5xx answers and refused connections itself, but not a response
    whose body breaks off half-way (a dropped connection, a restarting server): pyarrow
    reports that as an OSError. A missing file, a denied one, or any other local error
    that cannot heal (PERMANENT_ERRNOS) is not retried.
    """
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except (FileNotFoundError, PermissionError, IsADirectoryError):
            raise
        except OSError as e:
            if e.errno in PERMANENT_ERRNOS:  # as its own type (NotADirectoryError, …), at once
                raise OSError(e.errno, os.strerror(e.errno), what) from None
            if _UNRESOLVED.search(str(e)):  # the SDK tried for minutes already; no network or a wrong host
                raise StorageError(f"{what}: the storage host does not resolve (no network, or a wrong endpoint "
                                   "or bucket name)") from None
            if attempt == attempts:
                raise
            delay = min(0.5 * 2 ** (attempt - 1), 8.0)
            print(f"[storage] {what}: {redact(str(e)).splitlines()[0][:200]}; retry {attempt}/{attempts - 1} "
                  f"in {delay:.1f}s", file=sys.stderr, flush=True)
            time.sleep(delay)
    raise AssertionError("unreachable")


def read_bytes(uri: str, **kw) -> bytes:
    """The whole object; FileNotFoundError naming the URI (not the inner path) if absent."""
    fs, path = resolve(uri, **kw)

    def read() -> bytes:
        with fs.open_input_stream(path) as f:
            return f.read()
    try:
        return retry_reads(read, uri)
    except FileNotFoundError:
        raise FileNotFoundError(2, "not found", uri) from None


def write_bytes_atomic(uri: str, data: bytes, **kw) -> None:
    """Readers see the old object or the whole new one, never a prefix.

    Object stores give that for a single PUT (and for a multipart upload, which only
    appears when completed; pyarrow does not complete one whose parts failed). On a local
    disk we write a temporary file next to the target and rename it over the target.
    """
    fs, path = resolve(uri, **kw)
    if isinstance(fs, pafs.LocalFileSystem):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            try:
                Path(tmp).unlink(missing_ok=True)
            except OSError:
                pass  # the first error (read-only, no space) is the one to report
            raise
        return
    with fs.open_output_stream(path) as f:
        f.write(data)


def probe_writable(uri: str, **kw) -> None:
    """Write and delete a small object beside `uri`: fail before the work, not after it."""
    probe = f"{uri}.probe-{uuid.uuid4().hex[:8]}"
    try:
        write_bytes_atomic(probe, b"", **kw)
    except OSError as e:  # name the path the caller gave, not the probe's
        if e.errno is None:
            raise
        raise OSError(e.errno, e.strerror or os.strerror(e.errno), uri) from None
    delete(probe, **kw)


def delete(uri: str, **kw) -> None:
    """Remove one file; a file that is already gone is not an error."""
    fs, path = resolve(uri, **kw)
    try:
        fs.delete_file(path)
    except FileNotFoundError:
        pass


def check_writable(uri: str, **kw) -> None:
    """StorageError naming `uri` unless a file can be created there (the folder is made if
    missing). Commands call this before hours of work, not after: a probe object is written
    and deleted, which is the one test that means the same on a disk, S3 and GCS."""
    probe = join(uri, f".vlv-write-probe-{uuid.uuid4().hex[:8]}")
    try:
        write_bytes_atomic(probe, b"", **kw)
        delete(probe, **kw)
    except OSError as e:
        why = e.strerror or redact(str(e)).splitlines()[0][:200] or type(e).__name__
        raise StorageError(f"{uri}: not writable ({why})") from None


_TEMP_SUFFIX = re.compile(r"\.tmp-[0-9a-f]{8}$")  # what write_bytes_atomic names its temporary files


def remove_temp_files(uri: str, **kw) -> int:
    """Delete the temporary files a killed `write_bytes_atomic` left directly under `uri` (a
    local folder; object stores never hold one); return how many."""
    fs, path = resolve(uri, **kw)
    if not isinstance(fs, pafs.LocalFileSystem) or not Path(path).is_dir():
        return 0
    stale = [p for p in Path(path).iterdir() if p.is_file() and _TEMP_SUFFIX.search(p.name)]
    for p in stale:
        p.unlink(missing_ok=True)
    return len(stale)


class NotJSON(StorageError):
    """A file that should hold JSON and does not (a torn write, another file in its place).
    Callers that expect one (a lease, a progress file) catch this, not ValueError: a storage
    failure must not pass for a torn file."""

    def __init__(self, uri: str, e: ValueError):
        self.reason = f"{e.msg}: line {e.lineno} column {e.colno}" if isinstance(e, json.JSONDecodeError) else str(e)
        super().__init__(f"{uri}: not valid JSON ({self.reason})")


def read_json(uri: str, **kw) -> Any:
    """The JSON document at `uri`; NotJSON naming it when it is not one."""
    data = read_bytes(uri, **kw)
    try:
        return json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise NotJSON(uri, e) from None


def write_json_atomic(uri: str, obj: Any, **kw) -> None:
    write_bytes_atomic(uri, json.dumps(obj, indent=1, sort_keys=True).encode(), **kw)


def list_files(uri: str, suffix: str = "", **kw) -> list[str]:
    """URIs of the files directly under `uri` whose names end with `suffix`, sorted."""
    fs, path = resolve(uri, **kw)
    if fs.get_file_info(path).type == pafs.FileType.NotFound:
        return []
    infos = fs.get_file_info(pafs.FileSelector(path, recursive=False))
    return sorted(join(uri, posixpath.basename(i.path)) for i in infos
                  if i.type == pafs.FileType.File and i.path.endswith(suffix))


def redact(text: str) -> str:
    """Mask secret values from the environment, and a URL's `user:password@`, in `text`.

    Covers the AWS and wandb keys, and the secret fields of the GCP credentials file
    that GOOGLE_APPLICATION_CREDENTIALS points at (or holds inline, as some CI does).
    """
    secrets = [os.environ.get(name) for name in SECRET_ENV if name != _GCP_ENV]
    gcp = os.environ.get(_GCP_ENV)
    if gcp:
        secrets += _gcp_secrets(gcp, _mtime(gcp))
    # Longest first, so a secret that contains another is masked whole.
    for value in sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True):
        text = text.replace(value, "***")
    return _URL_USERINFO.sub(r"\g<scheme>***@", text)


def _mtime(path: str) -> float:
    try:
        return os.stat(path).st_mtime
    except (OSError, ValueError):
        return 0.0


@functools.lru_cache(maxsize=4)
def _gcp_secrets(value: str, mtime: float) -> tuple[str, ...]:
    """Secret strings of a GCP credentials JSON; cached per (path, mtime): logging calls often."""
    try:
        raw = value if value.lstrip().startswith("{") else Path(value).read_text()
        creds = json.loads(raw)
    except (OSError, ValueError):
        return ()
    if not isinstance(creds, dict):
        return ()
    found = [str(creds[k]) for k in GCP_SECRET_FIELDS if creds.get(k)]
    # A private key is multi-line: it may appear in text raw or JSON-escaped.
    found += [json.dumps(s)[1:-1] for s in found]
    if value.lstrip().startswith("{"):
        found.append(value)
    return tuple(found)
