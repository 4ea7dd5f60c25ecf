"""benchmarks/bench_s3.py runs against its own moto server and reports both clients."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_s3_reads_every_pattern_with_both_clients():
    out = subprocess.run([sys.executable, "benchmarks/bench_s3.py", "--shards", "1", "--shard-mb", "1", "--repeats", "1"],
                         cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    for pattern in ("whole", "row_groups", "task"):
        assert r[f"{pattern}_pyarrow_mb_per_s"] > 0 and r[f"{pattern}_s3fs_mb_per_s"] > 0
    assert r["pyarrow_over_s3fs_per_task"] == round(r["task_pyarrow_mb_per_s"] / r["task_s3fs_mb_per_s"], 2)
