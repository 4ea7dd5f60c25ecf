"""Is data ever the bottleneck? The real read path (shards → Ray Data read + decode tasks →
`train.batches.Batches`, the class every training worker iterates) feeds a training step
of fixed duration, and we measure the share of step time spent waiting for a batch.

    python benchmarks/bench_ingest.py [--images 192] [--batch-size 16] [--step-s 0.4 | --gpu-rate 40] [--cpus N]

The step is a sleep: a GPU step leaves the worker's CPU free for Ray Data, as CUDA
kernels run asynchronously. Two passes over the same shards:
  1. data-bound (step of 0 s): the pipeline's sustained images/s per CPU here;
  2. at the GPU rate (`--gpu-rate` samples/s, default: ours at stage 1 from
     benchmarks/results.json when a GPU run is recorded there, else 40 ≈ the paper's 37):
     the share of step time waiting for data.
Then the CPUs per GPU worker that keep the wait under 5%: the GPU rate over the
pipeline's rate per CPU, with 5% headroom. LAION-like JPEGs (1024–2048 px) at 384 px,
as benchmarks/bench_pipeline.py makes them. One JSON line.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def measured_gpu_rate(results: Path) -> tuple[float | None, str | None]:
    """Ours' stage-1 samples/s on a GPU at paper sizes, the latest recorded; else (None, None)."""
    if not results.is_file():
        return None, None
    rows = [r for r in json.loads(results.read_text()).get("results", [])
            if r.get("bench") == "step" and r.get("stage") == 1 and r.get("config") == "ours"
            and r.get("preset") == "paper" and "samples_per_s" in r]
    return (rows[-1]["samples_per_s"], rows[-1]["device"]) if rows else (None, None)


def run_pass(cfg, data_uri: str, step_s: float, steps: int) -> dict:
    """`steps` training steps of `step_s` seconds each, fed by a fresh Batches (epochs roll over)."""
    from vlv_ray.train.batches import Batches
    from vlv_ray.train.stage1 import Stage1

    data = Batches(cfg, 0, 1, None, Stage1.collate, data_uri=data_uri, rejects_uri=None)
    data.next()  # the epoch's first batch: Ray start-up, not steady state
    wait, t0 = 0.0, time.perf_counter()
    for _ in range(steps):
        tw = time.perf_counter()
        data.next()
        wait += time.perf_counter() - tw
        time.sleep(step_s)
    total = time.perf_counter() - t0
    return {"wait_s": wait, "total_s": total, "images_per_s": steps * cfg.data.batch_size / total}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=192)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--resolution", type=int, default=384)
    ap.add_argument("--steps", type=int, default=8, help="timed steps per pass")
    ap.add_argument("--gpu-rate", type=float, default=None, help="samples/s one GPU consumes")
    ap.add_argument("--step-s", type=float, default=None, help="fixed step duration (overrides --gpu-rate)")
    ap.add_argument("--cpus", type=int, default=os.cpu_count() or 1, help="CPUs given to Ray")
    a = ap.parse_args(argv)
    import ray

    from bench_data import make_images
    from vlv_ray.config import load_job
    from vlv_ray.data import shards

    rate, rate_from = measured_gpu_rate(ROOT / "benchmarks" / "results.json")
    if a.step_s is not None:
        rate, rate_from = a.batch_size / a.step_s, "--step-s"
    elif a.gpu_rate is not None:
        rate, rate_from = a.gpu_rate, "--gpu-rate"
    elif rate is None:
        rate, rate_from = 40.0, "default (paper: ≈37 samples/s/GPU)"
    else:
        rate_from = f"benchmarks/results.json (bench_step ours, stage 1, {rate_from})"
    step_s = a.batch_size / rate

    root = Path(tempfile.mkdtemp(prefix="vlv-ingest-"))
    (root / "img").mkdir()
    for i, data in enumerate(make_images(a.images, seed=5)):
        (root / "img" / f"{i:05d}.jpg").write_bytes(data)
    shards.prepare(str(root / "img"), str(root / "data"), shard_rows=32, row_group_rows=16, progress=False)
    cfg = load_job(ROOT / "jobs" / "tiny.yaml", [f"data.uri={root / 'data'}", f"storage_path={root / 'runs'}",
                                                 f"data.resolution={a.resolution}", f"data.batch_size={a.batch_size}",
                                                 "data.decode_cpus=1"])
    ray.init(num_cpus=a.cpus, include_dashboard=False, log_to_driver=False)
    try:
        bound = run_pass(cfg, str(root / "data"), 0.0, a.steps)
        fed = run_pass(cfg, str(root / "data"), step_s, a.steps)
    finally:
        ray.shutdown()
    per_cpu = bound["images_per_s"] / a.cpus
    print(json.dumps({
        "bench": "ingest", "resolution": a.resolution, "batch_size": a.batch_size, "cpus": a.cpus,
        "gpu_rate_samples_per_s": round(rate, 1), "gpu_rate_from": rate_from, "step_s": round(step_s, 3),
        "pipeline_images_per_s": round(bound["images_per_s"], 1), "pipeline_images_per_s_per_cpu": round(per_cpu, 1),
        "data_wait_share": round(fed["wait_s"] / fed["total_s"], 3),
        "cpus_per_gpu_worker_for_wait_under_5pct": round(rate / per_cpu / 0.95, 2),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
