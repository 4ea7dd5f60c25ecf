"""Sustained images/s of the training read path (Ray Data: parquet row groups → CPU decode
tasks → ordered batches) on this machine, against the same decode in one process.

LAION-like JPEGs (1024–2048 px, quality 90) are generated, written as shards with
`vlv-ray data prepare`, then read through `vlv_ray.data.pipeline.rank_dataset`, exactly as
one training worker reads its part of an epoch. The first pass warms Ray up; the second is
timed from its first batch (steady state; `epoch_start_s` is the time to that first
batch). Prints one JSON line, including the CPU cores a GPU worker needs for 40 samples/s
(the paper's stage-1 rate is ≈37 samples/s/GPU).
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_data import make_images  # noqa: E402

RES = 384


def main() -> None:
    import ray

    from vlv_ray.config import load_job
    from vlv_ray.data import order, pipeline, shards
    from vlv_ray.data.decode import decode_image

    n = int(os.environ.get("BENCH_IMAGES", "128"))
    cpus = os.cpu_count() or 1
    root = Path(tempfile.mkdtemp(prefix="vlv-bench-"))
    (root / "img").mkdir()
    images = make_images(n, seed=3)
    for i, data in enumerate(images):
        (root / "img" / f"{i:05d}.jpg").write_bytes(data)
    shards.prepare(str(root / "img"), str(root / "data"), shard_rows=32, progress=False)

    t = time.perf_counter()
    for data in images:
        decode_image(data, RES)
    single = n / (time.perf_counter() - t)

    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    cfg = load_job(Path(__file__).resolve().parents[1] / "jobs" / "tiny.yaml",
                   [f"data.uri={root / 'data'}", f"storage_path={root / 'runs'}", f"data.resolution={RES}",
                    "data.decode_cpus=1"])
    fs, paths, manifest = pipeline.shard_paths(str(root / "data"))
    blocks = order.blocks_from_manifest(manifest)
    rates, starts = [], []
    for epoch in range(2):
        segments = order.rank_segments(blocks, 0, {"epoch": epoch}, 1, 0)
        ds = pipeline.rank_dataset(cfg, segments, blocks, fs=fs, paths=paths, epoch=epoch)
        t0, rows, t_first = time.perf_counter(), 0, None
        for batch in ds.iter_batches(batch_size=16, batch_format="numpy"):
            if t_first is None:  # steady state: from the first batch on
                t_first, first = time.perf_counter(), len(batch["key"])
            rows += len(batch["key"])
        rates.append((rows - first) / (time.perf_counter() - t_first))
        starts.append(t_first - t0)
    ray.shutdown()
    sustained = rates[-1]
    print(json.dumps({
        "bench": "ray_data_read_path", "resolution": RES, "images": n, "cpus": cpus,
        "pipeline_img_per_s": round(sustained, 1), "single_process_img_per_s": round(single, 1),
        "ratio": round(sustained / single, 2),
        "pipeline_img_per_s_per_cpu": round(sustained / cpus, 1),
        "cpus_per_gpu_for_40_samples_per_s": round(40 / (sustained / cpus), 2),
        "epoch_start_s": round(starts[-1], 2),
    }))


if __name__ == "__main__":
    main()
