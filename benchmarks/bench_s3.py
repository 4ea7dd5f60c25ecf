"""Reading shards from S3: pyarrow's S3FileSystem (what vlv_ray.storage uses) against s3fs,
on a local S3 server (moto, started and stopped here by PID).

    python benchmarks/bench_s3.py [--shards 4] [--shard-mb 32] [--repeats 3]

Each shard is a parquet file of incompressible image-sized byte rows in 8 row groups. Two
read patterns, per filesystem: whole objects (`read()`), one open reading every row group,
and what the training read path does (a task per row group: open, footer, that group;
pyarrow also with `pre_buffer`, which coalesces the column-chunk reads). MB/s is the median of `--repeats`
alternating passes. A local moto server measures client overhead (HTTP parsing, copies,
request count), not network bandwidth: read the ratio, not the absolute figure. One
JSON line.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_moto() -> tuple[subprocess.Popen, str]:
    port = free_port()
    log = Path(tempfile.mkdtemp(prefix="vlv-s3bench-")) / "moto.log"
    proc = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 60
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc, f"http://127.0.0.1:{port}"
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"moto did not start: {log.read_text()[-500:]}")


def shard_bytes(mb: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    rows = max(8, mb * 8)  # ~128 KiB per row, like a resized JPEG
    images = [rng.bytes(128 << 10) for _ in range(rows)]
    table = pa.table({"key": [f"{seed}-{i}" for i in range(rows)], "image": pa.array(images, pa.binary())})
    buf = io.BytesIO()
    pq.write_table(table, buf, row_group_size=rows // 8, compression="none")
    return buf.getvalue()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--shard-mb", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args(argv)
    import boto3
    import s3fs
    from pyarrow import fs as pafs

    # moto accepts any key; these are placeholders, not credentials.
    os.environ.update({"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"})
    proc, endpoint = start_moto()
    try:
        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="bench")
        keys, total = [], 0
        for i in range(a.shards):
            body = shard_bytes(a.shard_mb, i)
            boto3.client("s3", endpoint_url=endpoint).put_object(Bucket="bench", Key=f"s/{i}.parquet", Body=body)
            keys.append(f"bench/s/{i}.parquet")
            total += len(body)
        arrow = pafs.S3FileSystem(endpoint_override=endpoint, scheme="http", region="us-east-1")
        fsspec = s3fs.S3FileSystem(endpoint_url=endpoint, skip_instance_cache=True)

        def whole_arrow(k):
            with arrow.open_input_file(k) as f:
                return len(f.read())

        def whole_s3fs(k):
            with fsspec.open(k, "rb") as f:
                return len(f.read())

        def groups_arrow(k):
            with arrow.open_input_file(k) as f:
                p = pq.ParquetFile(f)
                return sum(p.read_row_group(g).nbytes for g in range(p.num_row_groups))

        def groups_s3fs(k):
            with fsspec.open(k, "rb") as f:
                p = pq.ParquetFile(f)
                return sum(p.read_row_group(g).nbytes for g in range(p.num_row_groups))

        def per_task(fs_open, **kw):
            def run(k):  # a Ray Data read task per row group: open, footer, that group (data/pipeline.py)
                n = 0
                for g in range(8):
                    with fs_open(k) as f:
                        n += pq.ParquetFile(f, **kw).read_row_group(g).nbytes
                return n
            return run

        fns = {"whole_pyarrow": whole_arrow, "whole_s3fs": whole_s3fs,
               "row_groups_pyarrow": groups_arrow, "row_groups_s3fs": groups_s3fs,
               "task_pyarrow": per_task(arrow.open_input_file),
               "task_pyarrow_pre_buffer": per_task(arrow.open_input_file, pre_buffer=True),
               "task_s3fs": per_task(lambda k: fsspec.open(k, "rb"))}
        times: dict[str, list[float]] = {k: [] for k in fns}
        for _ in range(a.repeats):
            for name, fn in fns.items():
                t = time.perf_counter()
                for k in keys:
                    fn(k)
                times[name].append(time.perf_counter() - t)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    mbps = {k: round(total / 2**20 / sorted(v)[len(v) // 2], 1) for k, v in times.items()}
    print(json.dumps({
        "bench": "s3_read", "server": "moto (local)", "shards": a.shards, "mb": round(total / 2**20, 1),
        **{f"{k}_mb_per_s": v for k, v in mbps.items()},
        "pyarrow_over_s3fs_whole": round(mbps["whole_pyarrow"] / mbps["whole_s3fs"], 2),
        "pyarrow_over_s3fs_row_groups": round(mbps["row_groups_pyarrow"] / mbps["row_groups_s3fs"], 2),
        "pyarrow_over_s3fs_per_task": round(mbps["task_pyarrow"] / mbps["task_s3fs"], 2),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
