"""The `vlv-ray` command: bad input ends in one line naming the problem and exit != 0."""
import os
import subprocess
import sys

import pytest

from helpers import REPO


def vlv(*args, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "vlv_ray.cli", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def assert_one_line_error(r, *needles):
    assert r.returncode != 0, r.stdout
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("vlv-ray: error: ")
    for n in needles:
        assert n in lines[0], lines[0]


def test_help_for_every_command():
    for args in ([], ["demo"], ["data"], ["data", "prepare"], ["data", "inspect"], ["train"],
                 ["config"], ["config", "show"], ["config", "check"]):
        r = vlv(*args, "--help")
        assert r.returncode == 0 and "usage: vlv-ray" in r.stdout, (args, r.stderr)


def test_missing_job_file():
    assert_one_line_error(vlv("train", "no/such/job.yaml"), "no/such/job.yaml", "no such job file")


def test_malformed_yaml(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    assert_one_line_error(vlv("config", "check", bad), "bad.yaml", "malformed YAML")


def test_invalid_key_in_override():
    assert_one_line_error(vlv("config", "show", "jobs/tiny.yaml", "optim.lrr=1"),
                          "optim.lrr: unknown key", "did you mean 'optim.lr'")


def test_config_show_resolves_overrides():
    r = vlv("config", "show", "jobs/tiny.yaml", "optim.lr=3e-4", "max_steps=11")
    assert r.returncode == 0, r.stderr
    assert "lr: 0.0003" in r.stdout and "max_steps: 11" in r.stdout


def test_config_check_reports_each_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nstage: 3\n")
    r = vlv("config", "check", "jobs/tiny.yaml", bad)
    assert r.returncode != 0 and "ok: jobs/tiny.yaml" in r.stdout
    assert "stage: got 3, expected a value in [1, 2]" in r.stderr


def test_prepare_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    assert_one_line_error(vlv("data", "prepare", tmp_path / "empty", tmp_path / "out"), "empty")
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_prepare_missing_folder(tmp_path):
    assert_one_line_error(vlv("data", "prepare", tmp_path / "nope", tmp_path / "out"), "nope")


def test_inspect_without_manifest(tmp_path):
    assert_one_line_error(vlv("data", "inspect", tmp_path), "manifest.json")


def test_prepare_then_inspect(tmp_path):
    from vlv_ray.data import synthetic

    synthetic.write_images(tmp_path / "img", n=12, seed=3, corrupt=2)
    r = vlv("data", "prepare", tmp_path / "img", tmp_path / "ds", "--shard-rows", "5")
    assert r.returncode == 0, r.stderr
    assert "wrote 12 rows in 3 shards" in r.stdout and "corrupt=2" in r.stdout
    r = vlv("data", "inspect", tmp_path / "ds", "--json")
    import json
    report = json.loads(r.stdout)
    assert report["rows"] == 12 and len(report["shards"]) == 3


def test_train_with_missing_dataset_is_one_line(tmp_path):
    r = vlv("train", "jobs/tiny.yaml", f"data.uri={tmp_path / 'nothing'}", f"storage_path={tmp_path / 'runs'}")
    assert_one_line_error(r, "manifest.json")


def test_train_on_fewer_images_than_a_batch_per_worker_is_one_line_before_any_work(tiny_dataset, tmp_path):
    """Its first epoch would end before its first step: said up front (it was a RuntimeError minutes in)."""
    r = vlv("train", "jobs/tiny.yaml", f"data.uri={tiny_dataset}", "data.max_images=7", f"storage_path={tmp_path}")
    assert r.returncode == 2
    assert_one_line_error(r, "data.max_images: got 7 images, expected at least one batch per worker "
                             "(2 × data.batch_size 4 = 8); lower data.batch_size or use fewer workers")
    assert not (tmp_path / "tiny").exists()  # no lease taken, nothing written


def test_a_binary_file_or_a_directory_as_the_job_file(tmp_path):
    png = tmp_path / "photo.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe")
    assert_one_line_error(vlv("train", png), "photo.png: not a text file", "expected a job file")
    assert_one_line_error(vlv("config", "show", png), "photo.png: not a text file")
    assert_one_line_error(vlv("config", "show", tmp_path), f"{tmp_path}: a directory, expected a job file")


def test_train_with_a_dead_ray_address_is_one_line_within_seconds(tiny_dataset, tmp_path):
    """`ray.init` waited more than 10 minutes for a cluster address where nothing listens."""
    import time

    from helpers import free_port

    port, runs = free_port(), tmp_path / "runs"
    start = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "vlv_ray.cli", "train", "jobs/tiny.yaml", f"data.uri={tiny_dataset}",
                        f"storage_path={runs}"], cwd=REPO, capture_output=True, text=True, timeout=120,
                       env={**os.environ, "RAY_ADDRESS": f"127.0.0.1:{port}"})
    took = time.monotonic() - start
    assert r.returncode == 2, r.stderr[-3000:]
    assert r.stderr.strip().splitlines() == [
        f"vlv-ray: error: RAY_ADDRESS=127.0.0.1:{port}: nothing answered at 127.0.0.1:{port} (Connection refused); "
        "expected a running cluster's address (HOST:6379), or no RAY_ADDRESS to start a local cluster"]
    assert took < 60, took  # the CLI's own imports are most of it on a loaded machine
    assert not (runs / "tiny" / "_LEASE.json").exists()


def test_a_storage_path_under_a_regular_file_is_not_retried(tmp_path):
    """ENOTDIR cannot heal: one line at once, no "retry 1/4" lines (RAY_ADDRESS: never reached)."""
    from helpers import JOBS
    (tmp_path / "file").write_text("")
    data = tmp_path / "data"
    from vlv_ray.data import shards, synthetic
    synthetic.write_images(tmp_path / "img", n=8, seed=1)  # one batch per worker: tiny.yaml's 2 × 4
    shards.prepare(str(tmp_path / "img"), str(data), progress=False)
    r = subprocess.run([sys.executable, "-m", "vlv_ray.cli", "train", JOBS / "tiny.yaml", f"data.uri={data}",
                        f"storage_path={tmp_path / 'file' / 'runs'}"], cwd=REPO, capture_output=True, text=True,
                       timeout=120, env={**os.environ, "RAY_ADDRESS": "127.0.0.1:1"})
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines() == [
        f"vlv-ray: error: storage_path={tmp_path / 'file' / 'runs'}: cannot write the run directory "
        f"{tmp_path / 'file' / 'runs' / 'tiny'} (Not a directory); expected a writable directory or bucket"]


def test_a_json_error_reads_once(tmp_path):
    from vlv_ray.data import shards

    (tmp_path / "manifest.json").write_text('{"shards": "unterminated')
    with pytest.raises(shards.DataError) as e:
        shards.load_manifest(str(tmp_path))
    assert "Unterminated string starting at: line 1 column 12" in str(e.value) and "at at" not in str(e.value)


@pytest.mark.parametrize("flags, message", [
    (["--shard-rows", "0"], "--shard-rows: got 0, expected at least 1"),
    (["--max-aspect", "0.5"], "--max-aspect: got 0.5, expected at least 1"),
    (["--shard-mb", "0"], "--shard-mb: got 0, expected a size in MiB above 0"),
])
def test_prepare_options_are_named_by_their_flags(tmp_path, flags, message):
    """The library names its arguments (shard_rows); the command line the flags the user typed."""
    from vlv_ray.data import synthetic

    synthetic.write_images(tmp_path / "img", n=2, seed=3)
    assert_one_line_error(vlv("data", "prepare", tmp_path / "img", tmp_path / "ds", *flags), message)


def test_in_flags_renames_arguments_only():
    from vlv_ray.cli.common import UserError, in_flags

    with pytest.raises(UserError, match=r"^--shard-rows: got 0, expected at least 1$"):
        with in_flags(shard_rows="--shard-rows"):
            raise ValueError("shard_rows: got 0, expected at least 1")
    with pytest.raises(UserError, match=r"^/d: holds a dataset prepared from /a; pass --overwrite to replace it$"):
        with in_flags(overwrite="--overwrite"):
            raise ValueError("/d: holds a dataset prepared from /a; pass overwrite=True to replace it")
    with pytest.raises(KeyError):  # not a ValueError: untouched
        with in_flags(steps="--steps"):
            raise KeyError("steps")
    with pytest.raises(ValueError, match=r"^model\.steps: 20 steps$"):  # a dotted key or a plain word: untouched
        with in_flags(steps="--steps"):
            raise ValueError("model.steps: 20 steps")
