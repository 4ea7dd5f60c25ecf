"""`data prepare` from webdataset tars and image-bytes parquet: real tar files, real parquet."""
import io
import json
import subprocess
import sys
import tarfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from vlv_ray.data import shards, synthetic

from test_shards import record_writes  # tests/data is on sys.path under pytest

from helpers import REPO


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _images(tmp_path, n, seed=0):
    return [p.read_bytes() for p in synthetic.write_images(tmp_path / f"src-{seed}", n=n, seed=seed)]


def write_tar(path, members):
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            _add(tar, name, data)
    return path


def test_webdataset_tar_keys_captions_and_rejects(tmp_path):
    imgs = _images(tmp_path, 4)
    (tmp_path / "tars").mkdir()
    write_tar(tmp_path / "tars" / "00000.tar", [
        ("a/000.png", imgs[0]), ("a/000.txt", b"a red circle\n"),
        ("a/001.jpg", imgs[1]), ("a/001.json", json.dumps({"caption": "two squares", "w": 48}).encode()),
        ("a/002.jpg", b"\xff\xd8\xff not a jpeg"),  # corrupt member: dropped and counted
        ("a/003.txt", b"a caption without an image"),  # no image at all
    ])
    write_tar(tmp_path / "tars" / "00001.tar", [("b/000.png", imgs[2]), ("b/001.jpg", imgs[3])])
    m = shards.prepare(str(tmp_path / "tars"), str(tmp_path / "ds"), shard_rows=2, progress=False)
    assert m["source"] == "tar" and m["rows"] == 4
    assert m["rejected"] == {"corrupt": 1, "unreadable": 1} and m["captioned"] == 2
    rows = {r["key"]: r for r in shards.iter_rows(str(tmp_path / "ds"))}
    assert set(rows) == {"a/000", "a/001", "b/000", "b/001"}
    assert rows["a/000"]["caption"] == "a red circle" and rows["a/001"]["caption"] == "two squares"
    assert rows["b/000"]["caption"] is None
    assert rows["a/001"]["image"] == imgs[1]  # the member's bytes as they were
    assert rows["b/001"]["source"].endswith("00001.tar#b/001")


def test_truncated_tar_is_one_line_and_a_rerun_after_refetching_rebuilds(tmp_path, monkeypatch):
    imgs = _images(tmp_path, 6)
    (tmp_path / "tars").mkdir()
    write_tar(tmp_path / "tars" / "00000.tar", [(f"{i:03d}.png", imgs[i]) for i in range(3)])
    whole = write_tar(tmp_path / "whole.tar", [(f"x{i:03d}.png", imgs[i]) for i in range(3, 6)]).read_bytes()
    with tarfile.open(tmp_path / "whole.tar") as t:
        last = t.getmembers()[-1]
    cut = last.offset_data + last.size // 2
    (tmp_path / "tars" / "00001.tar").write_bytes(whole[:cut])  # a download cut short inside a member
    with pytest.raises(shards.DataError, match=r"00001\.tar: not a readable tar file") as e:
        shards.prepare(str(tmp_path / "tars"), str(tmp_path / "ds"), shard_rows=3, progress=False)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "ds" / "manifest.json").exists()
    (tmp_path / "tars" / "00001.tar").write_bytes(whole)  # fetched again
    calls = record_writes(monkeypatch)
    m = shards.prepare(str(tmp_path / "tars"), str(tmp_path / "ds"), shard_rows=3, progress=False)
    # The source's file sizes changed, so this is a new input: everything is rewritten.
    assert m["rows"] == 6 and calls == [0, 1]


def test_crash_mid_tar_resumes_without_rewriting_complete_shards(tmp_path, monkeypatch):
    imgs = _images(tmp_path, 9)
    (tmp_path / "tars").mkdir()
    for t in range(3):
        write_tar(tmp_path / "tars" / f"{t:05d}.tar", [(f"{t}/{i}.png", imgs[3 * t + i]) for i in range(3)])
    record_writes(monkeypatch, crash_at=2)
    with pytest.raises(KeyboardInterrupt):
        shards.prepare(str(tmp_path / "tars"), str(tmp_path / "ds"), shard_rows=2, progress=False)
    calls = record_writes(monkeypatch)
    m = shards.prepare(str(tmp_path / "tars"), str(tmp_path / "ds"), shard_rows=2, progress=False)
    assert calls == [2, 3, 4]
    fresh = shards.prepare(str(tmp_path / "tars"), str(tmp_path / "fresh"), shard_rows=2, progress=False)
    assert [s["sha256"] for s in m["shards"]] == [s["sha256"] for s in fresh["shards"]]
    assert [r["key"] for r in shards.iter_rows(str(tmp_path / "ds"))] == [f"{t}/{i}" for t in range(3) for i in range(3)]


def test_parquet_with_binary_column_keys_and_captions(tmp_path):
    imgs = _images(tmp_path, 5)
    (tmp_path / "pq").mkdir()
    pq.write_table(pa.table({"jpg": imgs[:3], "url": ["u0", "u1", "u2"], "text": ["one", None, "three"]}),
                   tmp_path / "pq" / "part-0.parquet")
    pq.write_table(pa.table({"jpg": imgs[3:] + [b"garbage"], "url": ["u3", "u4", "u5"],
                             "text": ["four", "five", "six"]}), tmp_path / "pq" / "part-1.parquet")
    m = shards.prepare(str(tmp_path / "pq"), str(tmp_path / "ds"), key_column="url", caption_column="text",
                       progress=False)
    assert m["source"] == "parquet" and m["rows"] == 5 and m["rejected"] == {"corrupt": 1}
    rows = {r["key"]: r for r in shards.iter_rows(str(tmp_path / "ds"))}
    assert [rows[f"u{i}"]["caption"] for i in range(5)] == ["one", None, "three", "four", "five"]
    assert rows["u3"]["image"] == imgs[3] and rows["u4"]["source"].endswith("part-1.parquet#1")


def test_parquet_with_hf_image_structs_and_default_keys(tmp_path):
    imgs = _images(tmp_path, 3)
    structs = pa.array([{"bytes": b, "path": f"{i}.png"} for i, b in enumerate(imgs)],
                       pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
    pq.write_table(pa.table({"picture": structs}), tmp_path / "train.parquet")
    m = shards.prepare(str(tmp_path / "train.parquet"), str(tmp_path / "ds"), image_column="picture", progress=False)
    assert m["rows"] == 3
    assert [r["key"] for r in shards.iter_rows(str(tmp_path / "ds"))] == ["train/0", "train/1", "train/2"]


@pytest.mark.parametrize("kw, message", [
    ({}, r"train\.parquet: no an image column \(image, jpg, png, bytes, img\); its columns: picture"),
    ({"image_column": "img"}, r"no column 'img'; its columns: picture"),
    ({"image_column": "picture", "key_column": "id"}, r"no column 'id' \(key_column=id\)"),
])
def test_parquet_missing_columns_are_one_line(tmp_path, kw, message):
    pq.write_table(pa.table({"picture": [b"x"]}), tmp_path / "train.parquet")
    with pytest.raises(shards.DataError, match=message):
        shards.prepare(str(tmp_path / "train.parquet"), str(tmp_path / "ds"), progress=False, **kw)


def test_row_groups_are_recorded_and_checked(tmp_path):
    synthetic.write_images(tmp_path / "img", n=13, seed=0)
    m = shards.prepare(str(tmp_path / "img"), str(tmp_path / "ds"), shard_rows=10, row_group_rows=4, progress=False)
    assert [s["row_groups"] for s in m["shards"]] == [[4, 4, 2], [3]]
    assert pq.ParquetFile(tmp_path / "ds" / "shard-00000.parquet").metadata.num_row_groups == 3
    assert shards.inspect(str(tmp_path / "ds"))["integrity"]["ok"]
    # A shard rewritten with other row groups (same rows) is caught.
    t = pq.read_table(tmp_path / "ds" / "shard-00001.parquet")
    pq.write_table(t, tmp_path / "ds" / "shard-00001.parquet", row_group_size=1, compression="none")
    problems = shards.inspect(str(tmp_path / "ds"))["integrity"]["problems"]
    assert any(p["path"] == "shard-00001.parquet" for p in problems)


def test_cli_prepare_from_parquet_and_inspect_on_s3(tmp_path, s3_bucket):
    endpoint, bucket = s3_bucket
    imgs = _images(tmp_path, 4)
    pq.write_table(pa.table({"image": imgs, "caption": ["a", "b", "c", "d"]}), tmp_path / "laion.parquet")
    env_free = {k: v for k, v in __import__("os").environ.items() if not k.startswith("AWS_ENDPOINT")}

    def vlv(*args):
        return subprocess.run([sys.executable, "-m", "vlv_ray.cli", *map(str, args)], cwd=REPO, env=env_free,
                              capture_output=True, text=True, timeout=120)

    uri = f"s3://{bucket}/laion"
    r = vlv("data", "prepare", tmp_path / "laion.parquet", uri, "--row-group-rows", "2", "--endpoint-url", endpoint)
    assert r.returncode == 0, r.stderr
    assert "wrote 4 rows in 1 shards" in r.stdout
    r = vlv("data", "inspect", uri, "--json", "--endpoint-url", endpoint)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["rows"] == 4 and report["integrity"]["ok"]


def test_folder_and_tar_sources_on_s3(tmp_path, s3_bucket):
    from vlv_ray import storage

    endpoint, bucket = s3_bucket
    paths = synthetic.write_images(tmp_path / "img" / "sub", n=5, seed=3, corrupt=1)
    for p in paths:
        storage.write_bytes_atomic(f"s3://{bucket}/img/sub/{p.name}", p.read_bytes(), endpoint_url=endpoint)
    write_tar(tmp_path / "00000.tar", [(p.name, p.read_bytes()) for p in paths])
    storage.write_bytes_atomic(f"s3://{bucket}/tars/00000.tar", (tmp_path / "00000.tar").read_bytes(),
                               endpoint_url=endpoint)
    local = shards.prepare(str(tmp_path / "img"), str(tmp_path / "a"), progress=False)
    remote = shards.prepare(f"s3://{bucket}/img", str(tmp_path / "b"), progress=False, endpoint_url=endpoint)
    assert remote["rows"] == local["rows"] == 5 and remote["rejected"] == local["rejected"] == {"corrupt": 1}
    rows = lambda d: [(r["key"], r["image"]) for r in shards.iter_rows(str(tmp_path / d))]  # noqa: E731
    assert rows("b") == rows("a") and rows("a")[0][0] == "sub/img-00000"
    tar = shards.prepare(f"s3://{bucket}/tars", str(tmp_path / "c"), progress=False, endpoint_url=endpoint)
    assert tar["source"] == "tar" and [img for _, img in rows("c")] == [img for _, img in rows("a")]


def test_hf_structs_holding_only_a_path_are_read_from_it(tmp_path, s3_bucket):
    from test_shards import vlv

    from vlv_ray import storage

    endpoint, bucket = s3_bucket
    paths = synthetic.write_images(tmp_path / "hf" / "images", n=3, seed=2)
    struct = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    # As `datasets` writes images it opened from files: bytes null, path relative or absolute.
    rows = [{"bytes": None, "path": f"images/{paths[0].name}"}, {"bytes": None, "path": str(paths[1])},
            {"bytes": None, "path": "images/gone.png"}]
    pq.write_table(pa.table({"image": pa.array(rows, struct), "text": ["zero", "one", "two"]}),
                   tmp_path / "hf" / "train.parquet")
    r = vlv("data", "prepare", tmp_path / "hf" / "train.parquet", tmp_path / "ds")
    assert r.returncode == 0, r.stderr
    assert "wrote 2 rows" in r.stdout and "rejected: 1 (unreadable=1)" in r.stdout
    got = {x["key"]: x for x in shards.iter_rows(str(tmp_path / "ds"))}
    assert got["train/0"]["image"] == paths[0].read_bytes() and got["train/1"]["image"] == paths[1].read_bytes()
    assert got["train/0"]["caption"] == "zero"
    # The same dataset in object storage: relative paths resolve against the parquet's URI.
    for p in (tmp_path / "hf").rglob("*.*"):
        storage.write_bytes_atomic(f"s3://{bucket}/hf/{p.relative_to(tmp_path / 'hf')}", p.read_bytes(),
                                   endpoint_url=endpoint)
    first = paths[0].read_bytes()
    paths[0].unlink()  # so row 0 can only come from the bucket
    m = shards.prepare(f"s3://{bucket}/hf/train.parquet", str(tmp_path / "ds3"), progress=False, endpoint_url=endpoint)
    assert m["rows"] == 2 and m["rejected"] == {"unreadable": 1}
    assert next(shards.iter_rows(str(tmp_path / "ds3")))["image"] == first


def test_usual_caption_column_names_are_detected_and_named(tmp_path):
    from test_shards import vlv

    imgs = _images(tmp_path, 3)
    pq.write_table(pa.table({"image": imgs, "text": ["one", None, "three"], "url": ["a", "b", "c"]}),
                   tmp_path / "hf.parquet")
    r = vlv("data", "prepare", tmp_path / "hf.parquet", tmp_path / "ds")
    assert r.returncode == 0, r.stderr
    assert ("rows with a caption: 2 of 3 (captions from column 'text' of hf.parquet (columns: image, text, url))"
            in r.stdout)
    r = vlv("data", "inspect", tmp_path / "ds")
    assert r.returncode == 0 and "rows with a caption: 2 of 3 (captions from column 'text'" in r.stdout
    assert "captions=" not in r.stdout and "image filters: max_aspect=none, min_side=0" in r.stdout
    pq.write_table(pa.table({"image": imgs, "url": ["a", "b", "c"]}), tmp_path / "bare.parquet")
    r = vlv("data", "prepare", tmp_path / "bare.parquet", tmp_path / "ds2")
    assert "rows with a caption: 0 of 3 (captions from no column of bare.parquet (columns: image, url))" in r.stdout


def test_a_prepare_that_breaks_mid_way_leaves_the_existing_dataset_intact(tmp_path):
    imgs = _images(tmp_path, 6) + _images(tmp_path, 3, seed=5)
    (tmp_path / "tars").mkdir()
    for t in range(2):
        write_tar(tmp_path / "tars" / f"{t:05d}.tar", [(f"{t}/{i}.png", imgs[3 * t + i]) for i in range(3)])
    ds = str(tmp_path / "ds")
    shards.prepare(str(tmp_path / "tars"), ds, shard_rows=2, progress=False)
    before = (tmp_path / "ds" / "manifest.json").read_bytes()
    # New images in the first tar (new shard bytes), and the second cut short: shards get written, then it fails.
    write_tar(tmp_path / "tars" / "00000.tar", [(f"0/{i}.png", imgs[6 + i]) for i in range(3)])
    whole = (tmp_path / "tars" / "00001.tar").read_bytes()
    with tarfile.open(tmp_path / "tars" / "00001.tar") as t:
        last = t.getmembers()[-1]
    (tmp_path / "tars" / "00001.tar").write_bytes(whole[: last.offset_data + last.size // 2])
    with pytest.raises(shards.DataError, match=r"00001\.tar: not a readable tar file"):
        shards.prepare(str(tmp_path / "tars"), ds, shard_rows=2, progress=False)
    assert (tmp_path / "ds" / "manifest.json").read_bytes() == before
    assert shards.inspect(ds)["integrity"]["ok"]
    assert [r["image"] for r in shards.iter_rows(ds)] == imgs[:6]
