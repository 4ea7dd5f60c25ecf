"""Writing and inspecting sharded image parquet: real files, real pyarrow."""
import json

import pyarrow.parquet as pq
import pytest

from vlv_ray.data import shards, synthetic


def test_prepare_writes_shards_and_manifest(tmp_path):
    synthetic.write_images(tmp_path / "img", n=25, seed=0)
    m = shards.prepare(str(tmp_path / "img"), str(tmp_path / "ds"), shard_rows=10, progress=False)
    assert [s["rows"] for s in m["shards"]] == [10, 10, 5] and m["rows"] == 25
    t = pq.read_table(tmp_path / "ds" / "shard-00000.parquet")
    assert t.schema.equals(shards.SHARD_SCHEMA)
    original = (tmp_path / "img" / "img-00000.png").read_bytes()
    assert t.column("image")[0].as_py() == original  # bytes stored as given, never re-encoded
    assert t.column("key")[0].as_py() == "img-00000" and t.column("width")[0].as_py() == 48
    assert json.loads((tmp_path / "ds" / "manifest.json").read_text()) == m
    assert not (tmp_path / "ds" / shards.PROGRESS).exists()
    assert shards.inspect(str(tmp_path / "ds"))["integrity"]["ok"]


def test_corrupt_and_filtered_images_are_rejected_and_counted(tmp_path):
    from PIL import Image

    synthetic.write_images(tmp_path / "img", n=6, seed=0, corrupt=3)
    Image.new("RGB", (40, 100)).save(tmp_path / "img" / "tall.png")  # aspect 2.5
    Image.new("RGB", (20, 20)).save(tmp_path / "img" / "tiny.png")  # shorter side 20
    m = shards.prepare(str(tmp_path / "img"), str(tmp_path / "ds"), min_side=30, max_aspect=2.0, progress=False)
    assert m["rejected"] == {"corrupt": 3, "aspect": 1, "too_small": 1} and m["rows"] == 6
    keys = {r["key"] for r in shards.iter_rows(str(tmp_path / "ds"))}
    assert not any(k.startswith("broken") for k in keys) and "tall" not in keys and "tiny" not in keys
    assert m["filters"] == {"min_side": 30, "max_aspect": 2.0, "captions": False}


def test_captions_from_jsonl_and_csv(tmp_path):
    synthetic.write_images(tmp_path / "img", n=3, seed=0)
    (tmp_path / "c.jsonl").write_text('{"key": "img-00000", "caption": "a red circle"}\n')
    shards.prepare(str(tmp_path / "img"), str(tmp_path / "a"), captions=str(tmp_path / "c.jsonl"), progress=False)
    caps = {r["key"]: r["caption"] for r in shards.iter_rows(str(tmp_path / "a"))}
    assert caps == {"img-00000": "a red circle", "img-00001": None, "img-00002": None}
    (tmp_path / "c.csv").write_text("key,caption\nimg-00001,\"two, squares\"\n")
    shards.prepare(str(tmp_path / "img"), str(tmp_path / "b"), captions=str(tmp_path / "c.csv"), progress=False)
    assert {r["key"]: r["caption"] for r in shards.iter_rows(str(tmp_path / "b"))}["img-00001"] == "two, squares"
    (tmp_path / "bad.jsonl").write_text('{"key": "x"}\n')
    with pytest.raises(shards.DataError, match=r"bad\.jsonl: line 1: expected a JSON object with 'key' and 'caption'"):
        shards.prepare(str(tmp_path / "img"), str(tmp_path / "c"), captions=str(tmp_path / "bad.jsonl"))


def test_rerun_after_crash_reuses_complete_shards(tmp_path, monkeypatch):
    synthetic.write_images(tmp_path / "img", n=30, seed=0)
    dest = tmp_path / "ds"
    real_write = shards._write_shard
    calls = []

    def crash_on_third(dest_, index, rows, kw):
        calls.append(index)
        if index == 2:
            raise KeyboardInterrupt("simulated crash")
        return real_write(dest_, index, rows, kw)

    monkeypatch.setattr(shards, "_write_shard", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        shards.prepare(str(tmp_path / "img"), str(dest), shard_rows=10, progress=False)
    assert not (dest / "manifest.json").exists()  # nothing half-done is exposed
    with pytest.raises(shards.DataError, match="manifest.json: not found"):
        shards.load_manifest(str(dest))

    monkeypatch.setattr(shards, "_write_shard", lambda *a: calls.append(a[1]) or real_write(*a))
    calls.clear()
    m = shards.prepare(str(tmp_path / "img"), str(dest), shard_rows=10, progress=False)
    assert calls == [2]  # shards 0 and 1 were reused, only shard 2 written
    fresh = shards.prepare(str(tmp_path / "img"), str(tmp_path / "fresh"), shard_rows=10, progress=False)
    assert [s["sha256"] for s in m["shards"]] == [s["sha256"] for s in fresh["shards"]]


def test_inspect_reports_altered_and_missing_shards(tmp_path):
    synthetic.write_images(tmp_path / "img", n=12, seed=0)
    shards.prepare(str(tmp_path / "img"), str(tmp_path / "ds"), shard_rows=4, progress=False)
    p = tmp_path / "ds" / "shard-00001.parquet"
    p.write_bytes(p.read_bytes()[:-10] + b"0123456789")
    (tmp_path / "ds" / "shard-00002.parquet").unlink()
    r = shards.inspect(str(tmp_path / "ds"))
    assert not r["integrity"]["ok"]
    assert r["integrity"]["problems"] == [{"path": "shard-00001.parquet", "problem": "sha256 mismatch"},
                                          {"path": "shard-00002.parquet", "problem": "missing"}]
    assert "integrity: FAILED" in shards.format_inspect(r)


@pytest.mark.parametrize("make, message", [
    (lambda p: p, "no such folder"),
    (lambda p: (p.mkdir(), p)[1], "no images found"),
])
def test_empty_or_missing_source_is_one_line(tmp_path, make, message):
    src = make(tmp_path / "src")
    with pytest.raises(shards.DataError, match=message) as e:
        shards.prepare(str(src), str(tmp_path / "out"))
    assert str(src) in str(e.value) and "\n" not in str(e.value)
