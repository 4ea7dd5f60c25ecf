"""Storage URIs: one module turns every URI into a pyarrow filesystem."""
import time

import pyarrow.fs as pafs
import pytest

from vlv_ray import storage


def test_local_forms_resolve_to_absolute_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for uri in ("data", str(tmp_path / "data"), f"file://{tmp_path}/data"):
        fs, path = storage.resolve(uri)
        assert isinstance(fs, pafs.LocalFileSystem) and path == str(tmp_path / "data")


def test_s3_uses_endpoint_from_argument_or_env(monkeypatch):
    import pickle

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "very-secret-value")
    fs, path = storage.resolve("s3://bucket/a/b/", endpoint_url="http://127.0.0.1:9000")
    assert isinstance(fs, pafs.S3FileSystem) and path == "bucket/a/b"
    opts = pafs.S3FileSystem.__reduce__(fs)[1][0]  # what pyarrow itself would pickle
    assert opts["endpoint_override"] == "127.0.0.1:9000" and opts["scheme"] == "http"
    # The copy Ray pickles to workers keeps the endpoint and the retry policy (pyarrow's
    # own pickle drops the latter) and holds no credential.
    blob = pickle.dumps(fs)
    assert b"very-secret-value" not in blob and b"testing" not in blob
    copy = pickle.loads(blob)
    assert copy._args == ("127.0.0.1:9000", "http", fs._args[2], storage.S3_ATTEMPTS)
    assert pafs.S3FileSystem.__reduce__(copy)[1][0]["endpoint_override"] == "127.0.0.1:9000"
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9001")
    assert storage.resolve("s3://b/x")[0]._args[0] == "127.0.0.1:9001"


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


def test_malformed_uris_are_one_line_errors():
    with pytest.raises(storage.StorageError, match=r"file://data/x: file:// URIs take an absolute path"):
        storage.resolve("file://data/x")
    for uri in ("s3://", "s3:///key", "gs://"):
        with pytest.raises(storage.StorageError, match="no bucket") as e:
            storage.resolve(uri)
        assert uri in str(e.value) and "\n" not in str(e.value)


def test_join_keeps_scheme_and_treats_parts_as_relative(tmp_path):
    assert storage.join("s3://b/ds/", "shard-0.parquet") == "s3://b/ds/shard-0.parquet"
    assert storage.join("s3://b/ds", "/runs", "x") == "s3://b/ds/runs/x"
    assert storage.join(str(tmp_path), "/m.json") == str(tmp_path / "m.json")


def test_failed_atomic_write_keeps_old_content_and_no_temp(tmp_path):
    uri = str(tmp_path / "m.json")
    storage.write_bytes_atomic(uri, b"old")
    with pytest.raises(TypeError):
        storage.write_bytes_atomic(uri, "not bytes")  # fails inside the write
    assert (tmp_path / "m.json").read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]
    storage.delete(uri)
    storage.delete(uri)  # already gone: not an error
    assert not storage.exists(uri)


def test_redact_masks_gcp_credentials_file_contents(tmp_path, monkeypatch):
    import json

    key = "-----BEGIN PRIVATE KEY-----\nMIIEabc\n-----END PRIVATE KEY-----\n"
    creds = tmp_path / "sa.json"
    creds.write_text(json.dumps({"type": "service_account", "private_key": key,
                                 "private_key_id": "abcd1234", "client_email": "me@x.iam"}))
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(creds))
    text = f"raw {key} escaped {json.dumps(key)} id abcd1234 by me@x.iam"
    out = storage.redact(text)
    assert "MIIEabc" not in out and "abcd1234" not in out
    assert "me@x.iam" in out  # not a secret: logs stay readable


def test_s3_round_trip_on_a_real_endpoint(s3_bucket, monkeypatch):
    endpoint, bucket = s3_bucket
    root = f"s3://{bucket}/ds"
    storage.write_json_atomic(storage.join(root, "m.json"), {"a": 1}, endpoint_url=endpoint)
    storage.write_bytes_atomic(storage.join(root, "x.bin"), b"\x00" * 10, endpoint_url=endpoint)
    assert storage.read_json(f"{root}/m.json", endpoint_url=endpoint) == {"a": 1}
    assert storage.list_files(root, ".json", endpoint_url=endpoint) == [f"{root}/m.json"]
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)  # how a cluster's runtime_env would pass it
    assert storage.exists(f"{root}/x.bin") and not storage.exists(f"{root}/nope")
    with pytest.raises(FileNotFoundError, match=f"s3://{bucket}/ds/nope"):
        storage.read_bytes(f"{root}/nope")


def test_retry_reads_repeats_transient_errors_only(capsys, monkeypatch):
    monkeypatch.setattr(storage.time, "sleep", lambda s: None)
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise OSError("AWS Error INTERNAL_FAILURE during GetObject operation: Failed to flush response stream")
        return b"data"

    assert storage.retry_reads(flaky, "s3://b/k") == b"data" and len(calls) == 3
    assert capsys.readouterr().err.count("s3://b/k: AWS Error INTERNAL_FAILURE") == 2

    def missing():
        calls.append(1)
        raise FileNotFoundError("gone")

    calls.clear()
    with pytest.raises(FileNotFoundError):
        storage.retry_reads(missing, "s3://b/k")
    assert len(calls) == 1  # a missing object is an answer, not a fault

    def broken():
        calls.append(1)
        raise OSError("connection reset")

    calls.clear()
    with pytest.raises(OSError, match="connection reset"):
        storage.retry_reads(broken, "s3://b/k", attempts=3)
    assert len(calls) == 3


def test_a_storage_host_that_does_not_resolve_is_one_error_not_minutes_of_retries(monkeypatch):
    """curl's own "could not resolve host" (an endpoint under .invalid never resolves): the SDK has
    retried by then, so retry_reads stops at once (5 × ≈ 90 s before) with an error naming the URI."""
    monkeypatch.setattr(storage, "S3_ATTEMPTS", 1)  # the SDK's own retries: ≈ 90 s at the default 10
    t0 = time.time()
    with pytest.raises(storage.StorageError, match=r"^s3://b/k: the storage host does not resolve"):
        storage.read_bytes("s3://b/k", endpoint_url="http://nowhere.invalid:9000")
    assert time.time() - t0 < 30


def test_a_file_that_is_not_json_is_one_error_naming_it_and_a_storage_failure_is_not_one(tmp_path, monkeypatch):
    """Callers that expect torn JSON (a lease, a progress file) catch NotJSON; an unreachable
    store must reach them as what it is, not as a torn file."""
    from vlv_ray.train import lease

    (tmp_path / "a.json").write_text('{"owner": ')
    with pytest.raises(storage.NotJSON, match=r"a\.json: not valid JSON \(Expecting value: line 1 column 11\)$"):
        storage.read_json(str(tmp_path / "a.json"))
    (tmp_path / lease.LEASE_FILE).write_text('{"owner": ')
    assert lease.owned(str(tmp_path), "me")  # a torn lease: the next read decides
    monkeypatch.setattr(storage, "S3_ATTEMPTS", 1)
    with pytest.raises(storage.StorageError, match="does not resolve"):
        lease.owned("s3://b/run", "me", endpoint_url="http://nowhere.invalid:9000")

