"""Storage URIs: one module turns every URI into a pyarrow filesystem."""
import pyarrow.fs as pafs
import pytest

from vlv_ray import storage


def test_local_forms_resolve_to_absolute_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for uri in ("data", str(tmp_path / "data"), f"file://{tmp_path}/data"):
        fs, path = storage.resolve(uri)
        assert isinstance(fs, pafs.LocalFileSystem) and path == str(tmp_path / "data")


def test_s3_uses_endpoint_from_argument_or_env(monkeypatch):
    fs, path = storage.resolve("s3://bucket/a/b/", endpoint_url="http://127.0.0.1:9000")
    assert isinstance(fs, pafs.S3FileSystem) and path == "bucket/a/b"
    opts = fs.__reduce__()[1][0]
    assert opts["endpoint_override"] == "127.0.0.1:9000" and opts["scheme"] == "http"
    # Credentials are never baked into the filesystem object (it is pickled to Ray workers).
    assert opts["access_key"] is None and opts["secret_key"] is None
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9001")
    assert storage.resolve("s3://b/x")[0].__reduce__()[1][0]["endpoint_override"] == "127.0.0.1:9001"


def test_unknown_scheme_is_one_line_naming_the_uri():
    with pytest.raises(storage.StorageError, match=r"hdfs://x/y: unsupported scheme 'hdfs://'"):
        storage.resolve("hdfs://x/y")
    with pytest.raises(storage.StorageError, match="empty storage URI"):
        storage.resolve("")


def test_atomic_write_and_json_round_trip(tmp_path):
    uri = str(tmp_path / "sub" / "m.json")
    storage.write_json_atomic(uri, {"a": 1})
    storage.write_json_atomic(uri, {"a": 2})
    assert storage.read_json(uri) == {"a": 2}
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["m.json"]  # no temp files left
    assert storage.list_files(str(tmp_path / "sub"), ".json") == [uri]
    with pytest.raises(FileNotFoundError):
        storage.read_bytes(str(tmp_path / "nope"))


def test_redact_masks_secret_env_values(monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t-value")
    assert storage.redact("key=s3cr3t-value;") == "key=***;"
