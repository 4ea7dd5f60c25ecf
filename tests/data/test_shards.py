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
    assert m["filters"] == {"min_side": 30, "max_aspect": 2.0}
    # Every rejected item is named with its reason next to the manifest (issue 14).
    lines = [json.loads(x) for f in m["rejects"] for x in (tmp_path / "ds" / f).read_text().splitlines()]
    assert sorted((r["key"], r["reason"]) for r in lines) == sorted(
        [(f"broken-{i:03d}", "corrupt") for i in range(3)] + [("tall", "aspect"), ("tiny", "too_small")])
    assert all(r["source"].endswith((".png", ".jpg")) for r in lines)


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


_WRITE_SHARD = shards._write_shard


def record_writes(monkeypatch, crash_at: int | None = None) -> list[int]:
    """From now on, the index of every shard `prepare` writes; writing shard `crash_at`
    raises KeyboardInterrupt instead (a crash half-way through)."""
    calls: list[int] = []

    def write(dest, index, *rest):
        calls.append(index)
        if index == crash_at:
            raise KeyboardInterrupt("simulated crash")
        return _WRITE_SHARD(dest, index, *rest)

    monkeypatch.setattr(shards, "_write_shard", write)
    return calls


def test_rerun_after_crash_reuses_complete_shards(tmp_path, monkeypatch):
    synthetic.write_images(tmp_path / "img", n=30, seed=0)
    dest = tmp_path / "ds"
    record_writes(monkeypatch, crash_at=2)
    with pytest.raises(KeyboardInterrupt):
        shards.prepare(str(tmp_path / "img"), str(dest), shard_rows=10, progress=False)
    assert not (dest / "manifest.json").exists()  # nothing half-done is exposed
    with pytest.raises(shards.DataError, match="manifest.json: not found"):
        shards.load_manifest(str(dest))

    calls = record_writes(monkeypatch)
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


def test_check_image_catches_truncation_and_bombs():
    import io

    from PIL import Image

    def enc(fmt):
        buf = io.BytesIO()
        Image.effect_noise((64, 64), 40).convert("RGB").save(buf, fmt)
        return buf.getvalue()

    jpg, png = enc("JPEG"), enc("PNG")
    assert shards.check_image(jpg, 0, None) == (64, 64) and shards.check_image(png, 0, None) == (64, 64)
    assert shards.check_image(jpg[: len(jpg) // 2], 0, None) == "corrupt"  # verify() alone misses this
    assert shards.check_image(png[: len(png) - 30], 0, None) == "corrupt"
    assert shards.check_image(png, 0, None, max_pixels=32 * 32) == "bomb"


def test_duplicate_keys_and_caption_forms(tmp_path):
    synthetic.write_images(tmp_path / "img", n=3, seed=0)
    (tmp_path / "img" / "img-00000.jpg").write_bytes((tmp_path / "img" / "img-00001.jpg").read_bytes())
    (tmp_path / "c.jsonl").write_text('{"key": "img-00001.jpg", "caption": "with extension"}\n'
                                      '{"key": "img-00002", "caption": null}\n')
    m = shards.prepare(str(tmp_path / "img"), str(tmp_path / "ds"), captions=str(tmp_path / "c.jsonl"), progress=False)
    assert m["rejected"] == {"duplicate_key": 1} and m["captioned"] == 1
    rows = {r["key"]: r for r in shards.iter_rows(str(tmp_path / "ds"))}
    assert rows["img-00000"]["source"].endswith("img-00000.jpg")  # first in sorted order wins
    assert rows["img-00001"]["caption"] == "with extension" and rows["img-00002"]["caption"] is None
    (tmp_path / "none.csv").write_text("key,caption\nnot-a-key,hello\n")
    with pytest.raises(shards.DataError, match=r"none\.csv: no caption key matches an image key .*'img-00000'"):
        shards.prepare(str(tmp_path / "img"), str(tmp_path / "ds2"), captions=str(tmp_path / "none.csv"), progress=False)


def test_progress_lines_go_to_stderr_one_per_shard(tmp_path, capsys):
    synthetic.write_images(tmp_path / "img", n=7, seed=0)
    shards.prepare(str(tmp_path / "img"), str(tmp_path / "ds"), shard_rows=3)
    out = capsys.readouterr()
    lines = out.err.strip().splitlines()
    assert out.out == "" and len(lines) == 3
    assert lines[0].startswith("[prepare] shard 0: 3 rows, 3/7 items,") and "img/s, ETA" in lines[0]


def test_rerun_of_a_finished_dataset_is_a_no_op_until_inputs_change(tmp_path, monkeypatch):
    synthetic.write_images(tmp_path / "img", n=12, seed=0)
    src, dest = str(tmp_path / "img"), str(tmp_path / "ds")
    first = shards.prepare(src, dest, shard_rows=5, progress=False)
    calls = record_writes(monkeypatch)
    assert shards.prepare(src, dest, shard_rows=5, progress=False) == first and calls == []
    synthetic.write_images(tmp_path / "img" / "more", n=4, seed=9)
    second = shards.prepare(src, dest, shard_rows=5, progress=False)
    assert calls == [0, 1, 2, 3] and second["rows"] == 16
    assert shards.inspect(dest)["integrity"]["ok"]


def test_progress_from_other_options_is_not_reused(tmp_path, monkeypatch):
    synthetic.write_images(tmp_path / "img", n=12, seed=0)
    src, dest = str(tmp_path / "img"), str(tmp_path / "ds")
    real_write_json = shards.storage.write_json_atomic

    def no_manifest(uri, obj, **kw):  # a crash just before the manifest: every shard recorded
        if uri.endswith(shards.MANIFEST):
            raise KeyboardInterrupt("simulated crash")
        real_write_json(uri, obj, **kw)

    monkeypatch.setattr(shards.storage, "write_json_atomic", no_manifest)
    with pytest.raises(KeyboardInterrupt):
        shards.prepare(src, dest, shard_rows=4, progress=False)
    with pytest.raises(shards.DataError, match="did not finish .* run it again to resume"):
        shards.load_manifest(dest)
    monkeypatch.setattr(shards.storage, "write_json_atomic", real_write_json)
    m = shards.prepare(src, dest, shard_rows=6, progress=False)  # other options: start over
    assert [s["rows"] for s in m["shards"]] == [6, 6]


def test_inspect_table_and_row_count_check(tmp_path):
    synthetic.write_images(tmp_path / "img", n=9, seed=0, corrupt=1)
    shards.prepare(str(tmp_path / "img"), str(tmp_path / "ds"), shard_rows=3, progress=False)
    mpath = tmp_path / "ds" / "manifest.json"
    m = json.loads(mpath.read_text())
    m["shards"][1]["rows"] = 4  # hash still matches: only the row check can see this
    mpath.write_text(json.dumps(m))
    r = shards.inspect(str(tmp_path / "ds"))
    assert r["integrity"]["problems"] == [{"path": "shard-00001.parquet", "problem": "3 rows, manifest says 4"}]
    table = shards.format_inspect(r).splitlines()
    assert table[1].split() == ["shard", "rows", "MB", "status"]
    assert table[2].split()[:2] == ["shard-00000.parquet", "3"] and table[2].endswith("ok")
    assert any(x.startswith("rejected: corrupt=1; keys and reasons in ") for x in table)
    assert "integrity: FAILED (1 shards)" in table
    folded = shards.format_inspect(r, max_rows=1)  # the problem shard stays, the ok one folds
    assert "shard-00001.parquet" in folded and "shard-00002" not in folded and "… 1 more shards, all ok" in folded


def test_malformed_manifest_is_a_one_line_error(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({"schema_version": 1, "rows": 0}))
    with pytest.raises(shards.DataError, match=r"manifest\.json: missing key 'shards'"):
        shards.load_manifest(str(tmp_path))
    (tmp_path / "manifest.json").write_text(json.dumps({"schema_version": 1, "shards": [{"path": "a"}]}))
    with pytest.raises(shards.DataError, match=r"shards\[0\]: expected path, rows, bytes and sha256"):
        shards.load_manifest(str(tmp_path))
    (tmp_path / "manifest.json").write_text("{")
    with pytest.raises(shards.DataError, match="not valid JSON"):
        shards.load_manifest(str(tmp_path))
    (tmp_path / "manifest.json").unlink()
    (tmp_path / "manifest.json").mkdir()  # something in its place that cannot be read (was a traceback)
    with pytest.raises(shards.DataError, match=r"manifest\.json: cannot be read \(.*is a directory\)$"):
        shards.load_manifest(str(tmp_path))


def test_prepare_and_inspect_on_s3(tmp_path, s3_bucket, monkeypatch):
    endpoint, bucket = s3_bucket
    synthetic.write_images(tmp_path / "img", n=7, seed=4, corrupt=1)
    uri = f"s3://{bucket}/ds"
    m = shards.prepare(str(tmp_path / "img"), uri, shard_rows=4, progress=False, endpoint_url=endpoint)
    assert [s["rows"] for s in m["shards"]] == [4, 3] and m["rejected"] == {"corrupt": 1}
    calls = record_writes(monkeypatch)
    assert shards.prepare(str(tmp_path / "img"), uri, shard_rows=4, progress=False, endpoint_url=endpoint) == m
    assert calls == []  # finished and unchanged: nothing rewritten
    r = shards.inspect(uri, endpoint_url=endpoint)
    assert r["integrity"]["ok"] and r["rows"] == 7
    assert shards.shard_uris(uri, m) == [f"{uri}/shard-00000.parquet", f"{uri}/shard-00001.parquet"]


def test_shards_close_at_the_byte_target_by_default(tmp_path):
    paths = synthetic.write_images(tmp_path / "img", n=12, seed=7)
    sizes = [p.stat().st_size for p in sorted(paths)]
    target = sum(sizes[:4])  # about four images' worth
    m = shards.prepare(str(tmp_path / "img"), str(tmp_path / "ds"), shard_bytes=target, progress=False)
    assert len(m["shards"]) >= 3 and m["rows"] == 12
    # Every shard but the last stops at the first row that reaches the target.
    assert all(s["rows"] <= 5 for s in m["shards"])
    with pytest.raises(shards.DataError, match="shard_bytes: got 0, expected at least 1"):
        shards.prepare(str(tmp_path / "img"), str(tmp_path / "x"), shard_bytes=0)


# ---------------------------------------------------------------------------- as a user meets it: the CLI

REPO = __import__("pathlib").Path(__file__).resolve().parents[2]


def vlv(*args, timeout=120):
    """`vlv-ray ARGS` in a subprocess, as a user's shell runs it."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_ENDPOINT")}
    return subprocess.run([sys.executable, "-m", "vlv_ray.cli", *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def one_line_error(r, *needles):
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vlv-ray: error: "), r.stderr
    assert all(n in lines[0] for n in needles), lines[0]


def test_cli_summary_names_the_rejected_keys_file(tmp_path):
    synthetic.write_images(tmp_path / "img", n=5, seed=0, corrupt=2)
    r = vlv("data", "prepare", tmp_path / "img", tmp_path / "ds")
    assert r.returncode == 0, r.stderr
    line = next(x for x in r.stdout.splitlines() if x.startswith("rejected: 2 (corrupt=2); keys and reasons in "))
    path = line.split("keys and reasons in ")[1]
    assert [json.loads(x)["key"] for x in open(path)] == ["broken-000", "broken-001"]
    assert "rows with a caption: 0 of 5 (captions from nowhere" in r.stdout


def test_prepare_into_an_unwritable_destination_fails_before_reading_images(tmp_path, s3_bucket):
    endpoint, bucket = s3_bucket
    synthetic.write_images(tmp_path / "img", n=6, seed=0)
    (tmp_path / "file").write_text("not a folder")
    r = vlv("data", "prepare", tmp_path / "img", tmp_path / "file" / "ds", "--shard-rows", "2")
    one_line_error(r, str(tmp_path / "file" / "ds"), "not writable")
    assert "[prepare]" not in r.stdout + r.stderr  # no shard was made first
    r = vlv("data", "prepare", tmp_path / "img", "s3://no-such-bucket-here/ds", "--endpoint-url", endpoint)
    one_line_error(r, "s3://no-such-bucket-here/ds: not writable")


def test_demo_into_an_unwritable_workdir_fails_before_generating_images(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    r = vlv("demo", "--workdir", tmp_path / "file" / "demo")
    one_line_error(r, "not writable")
    assert "[demo]" not in r.stdout


def test_prepare_of_another_source_refuses_without_overwrite(tmp_path):
    synthetic.write_images(tmp_path / "a", n=9, seed=0)
    synthetic.write_images(tmp_path / "b", n=3, seed=1)
    ds = tmp_path / "ds"
    assert vlv("data", "prepare", tmp_path / "a", ds, "--shard-rows", "3").returncode == 0
    r = vlv("data", "prepare", tmp_path / "b", ds, "--shard-rows", "3")
    one_line_error(r, str(ds), f"prepared from {tmp_path / 'a'}", "--overwrite")
    assert shards.inspect(str(ds))["rows"] == 9 and vlv("data", "inspect", ds).returncode == 0
    r = vlv("data", "prepare", tmp_path / "b", ds, "--shard-rows", "3", "--overwrite")
    assert r.returncode == 0, r.stderr
    m = shards.load_manifest(str(ds))
    assert m["rows"] == 3 and m["src"] == str(tmp_path / "b")
    # The old dataset's three shards are gone, not left as orphans beside the new one.
    assert sorted(p.name for p in ds.glob("*.parquet")) == [s["path"] for s in m["shards"]]


def test_a_failed_prepare_leaves_the_existing_dataset_intact(tmp_path):
    paths = synthetic.write_images(tmp_path / "img", n=6, seed=0)
    ds = tmp_path / "ds"
    assert vlv("data", "prepare", tmp_path / "img", ds, "--shard-rows", "2").returncode == 0
    before = (ds / "manifest.json").read_bytes()
    for p in paths:  # the source is now unusable: every image will be rejected
        p.write_bytes(b"\xff\xd8\xff broken")
    r = vlv("data", "prepare", tmp_path / "img", ds, "--shard-rows", "2")
    one_line_error(r, "every image was rejected (corrupt=6)", f"{ds} is unchanged", "keys and reasons in")
    assert (ds / "manifest.json").read_bytes() == before
    assert vlv("data", "inspect", ds).returncode == 0 and shards.inspect(str(ds))["rows"] == 6


def test_inspect_exits_nonzero_and_prepare_rebuilds_a_tampered_shard(tmp_path):
    synthetic.write_images(tmp_path / "img", n=6, seed=0)
    ds = tmp_path / "ds"
    assert vlv("data", "prepare", tmp_path / "img", ds, "--shard-rows", "3").returncode == 0
    p = ds / "shard-00001.parquet"
    data = bytearray(p.read_bytes())
    data[100] ^= 0xFF  # same size, different bytes: a size check cannot see it
    p.write_bytes(bytes(data))
    r = vlv("data", "inspect", ds)
    assert r.returncode == 1 and "integrity: FAILED (1 shards)" in r.stdout
    r = vlv("data", "prepare", tmp_path / "img", ds, "--shard-rows", "3")
    assert r.returncode == 0 and "up to date" not in r.stderr
    assert "shard-00001.parquet: sha256 mismatch; rebuilding" in r.stderr
    assert vlv("data", "inspect", ds).returncode == 0


def test_leftover_temp_files_of_a_killed_prepare_are_removed(tmp_path):
    synthetic.write_images(tmp_path / "img", n=4, seed=0)
    (tmp_path / "ds").mkdir()
    leftover = tmp_path / "ds" / "shard-00000.parquet.tmp-0a1b2c3d"
    leftover.write_bytes(b"half a shard")
    r = vlv("data", "prepare", tmp_path / "img", tmp_path / "ds")
    assert r.returncode == 0 and "removed 1 temporary files left by an interrupted run" in r.stderr
    assert not leftover.exists()


def test_max_short_side_reencodes_large_images_once_and_records_the_original_size(tmp_path):
    import io

    import numpy as np
    from PIL import Image

    from vlv_ray.data.decode import decode_image

    (tmp_path / "img").mkdir()
    rng = np.random.default_rng(0)
    big = Image.fromarray(rng.integers(0, 255, (90, 120, 3), dtype=np.uint8))
    big.save(tmp_path / "img" / "big.jpg", quality=90)
    big.convert("RGBA").save(tmp_path / "img" / "png-named-jpg.jpg", "PNG")  # web crawls hold these
    small = tmp_path / "img" / "small.png"
    Image.new("RGB", (40, 30), (10, 200, 30)).save(small)
    m = shards.prepare(str(tmp_path / "img"), str(tmp_path / "ds"), max_short_side=48, progress=False)
    rows = {r["key"]: r for r in shards.iter_rows(str(tmp_path / "ds"))}
    for key in ("big", "png-named-jpg"):
        r = rows[key]
        assert (r["width"], r["height"], r["orig_width"], r["orig_height"]) == (64, 48, 120, 90)
        assert Image.open(io.BytesIO(r["image"])).format == "JPEG"
        # What training sees is close to decoding the original (Lanczos once, then a crop).
        a = decode_image(r["image"], 32).astype(int)
        b = decode_image((tmp_path / "img" / "big.jpg").read_bytes(), 32).astype(int)
        assert np.abs(a - b).mean() < 25
    assert rows["small"]["image"] == small.read_bytes()  # already small enough: the original bytes
    assert m["max_short_side"] == 48 and "re-encoded to it" in shards.format_inspect(shards.inspect(str(tmp_path / "ds")))
    with pytest.raises(shards.DataError, match="max_short_side: got 4, expected at least 8"):
        shards.prepare(str(tmp_path / "img"), str(tmp_path / "x"), max_short_side=4)
