"""Where a training step's time goes: the kernel profile behind bench_step's MFU.

    python benchmarks/profile_step.py --preset paper --device cuda --stage 1 --batch-size 32
    python benchmarks/profile_step.py --preset tiny --device cpu --stage 1          # smoke run

Builds "ours" exactly as benchmarks/bench_step.py does (the job's speed keys, cached
latents, compiled modules), warms up, then runs torch.profiler over a few steps. Prints
one JSON line: the step's wall time, the share of it the device was busy (the rest is the
host launching work: Python, dispatch, optimizer loops), and the busy time split by kernel
kind: matmul / convolution / attention (the FLOPs that MFU counts) against normalisation,
elementwise and casts, optimizer and copies (bandwidth work that MFU does not count), with
the 12 longest kernels. On a CPU the split is over CPU operators instead of kernels.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_step import build, job_config, optimizer, sync  # noqa: E402
from vlv_ray.models import speed  # noqa: E402

# First match wins; names are CUDA kernel names (cuBLAS/cuDNN/CUTLASS/Triton) or aten ops on a CPU.
KINDS = (
    ("optimizer", r"adam|multi_tensor|foreach"),
    ("attention", r"flash|fmha|attention|efficient_attention|sdpa"),
    ("convolution", r"conv|fprop|dgrad|wgrad|implicit_gemm|winograd|cudnn"),
    ("matmul", r"gemm|matmul|mm\b|addmm|bmm|cutlass|nvjet|xmma|sm90_|sm80_|linear"),
    ("norm", r"norm|welford|reduce"),
    ("copy/cast", r"copy|cast|to_copy|cat|fill|memset|memcpy|transpose|permute|contiguous"),
    ("fused elementwise (triton)", r"^triton_"),
    ("elementwise", r"elementwise|vectorized|unrolled|silu|gelu|add|mul|div|sub|exp|where|index"),
)


def kind_of(name: str) -> str:
    low = name.lower()
    for kind, pattern in KINDS:
        if re.search(pattern, low):
            return kind
    return "other"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", choices=("tiny", "paper"), default="tiny")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--stage", type=int, choices=(1, 2), default=1)
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--ours", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--steps", type=int, default=3, help="profiled steps")
    a = ap.parse_args(argv)
    device = torch.device(a.device)
    over = ([f"data.batch_size={a.batch_size}"] if a.batch_size else []) + \
        ([] if device.type == "cuda" else ["scaling.use_gpu=false"]) + a.ours
    cfg = job_config(a.stage, a.preset, over)
    torch.manual_seed(0)
    trainable, modules, loss_fn, batch, _ = build(a.stage, cfg, device, cached=True)
    trainable.train()
    speed.apply(cfg.model, modules, compile=False)
    speed.compile_modules(cfg.model, modules)
    opt = optimizer(trainable, cfg, device)
    gen = torch.Generator(device=device)

    def step(i: int) -> None:
        speed.step_begin(cfg.model)
        loss_fn(gen.manual_seed(i)).backward()
        opt.step()

    for i in range(a.warmup):
        step(i)
    sync(device)
    acts = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with torch.profiler.profile(activities=acts) as prof:
        t0 = time.perf_counter()
        for i in range(a.steps):
            step(a.warmup + i)
        sync(device)
        wall = (time.perf_counter() - t0) / a.steps
    on_device = device.type == "cuda"
    rows = []
    for e in prof.key_averages():
        is_kernel = e.device_type == torch.autograd.DeviceType.CUDA
        if on_device != is_kernel:
            continue
        us = (getattr(e, "self_device_time_total", 0) or 0) if on_device else e.self_cpu_time_total
        if us > 0:
            rows.append((e.key, us / 1e6 / a.steps, e.count // a.steps))
    busy = sum(r[1] for r in rows)
    kinds: dict[str, float] = {}
    for name, s, _ in rows:
        kinds[kind_of(name)] = kinds.get(kind_of(name), 0.0) + s
    top = sorted(rows, key=lambda r: -r[1])[:12]
    print(json.dumps({
        "bench": "profile_step", "stage": a.stage, "preset": a.preset, "batch_size": batch,
        "device": torch.cuda.get_device_name(device) if on_device else "cpu",
        "overrides": over, "step_s": round(wall, 4),
        "device_busy_share": round(busy / wall, 3) if on_device else None,
        "busy_s_per_step": round(busy, 4),
        "share_of_busy": {k: round(v / busy, 3) for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])} if busy else {},
        "top": [{"name": n[:120], "s_per_step": round(s, 5), "calls_per_step": c, "kind": kind_of(n)} for n, s, c in top],
        "command": " ".join(["python"] + sys.argv)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
