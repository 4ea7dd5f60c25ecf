"""Training-step speed of stage 1 and stage 2: the public code's configuration against ours,
measured in the same process on the same device.

    python benchmarks/bench_step.py --preset paper --device cuda     # one GPU, paper sizes
    python benchmarks/bench_step.py --preset tiny --device cpu       # CPU, tiny sizes
    python benchmarks/bench_step.py --preset paper --device meta     # FLOPs per sample only, no GPU

- reference: fp32 everywhere, the VAE encode on every step, UNet gradient checkpointing
  (how the public VLV code trains stage 1).
- ours: the speed keys of `jobs/stage{1,2}-paper.yaml` (deepspeed.precision and the
  model.* speed keys, see vlv_ray/models/speed.py) and cached latents (what the loop does
  when the dataset holds a latent cache). `--ours key=value` tries a variant.

Models: random init from the published configs (no download) for `paper`, the seeded tiny
preset for `tiny`. Batches are random tensors already on the device: this measures the
GPU step alone (benchmarks/bench_ingest.py measures the data side). A step is forward,
backward and AdamW; a bf16 trainable module keeps fp32 master weights in the optimizer, as
DeepSpeed's bf16 mode does. DeepSpeed itself is not in the loop: on one device ZeRO has
nothing to partition.

FLOPs: torch.utils.flop_counter.FlopCounterMode over one forward + backward (matmuls,
convolutions, attention; elementwise ops are not counted), before torch.compile. It does
not see activation recompute (checkpoint's re-run forward), so the count is model FLOPs,
the MFU numerator; recompute shows in the step time. The reference's VAE encode is
counted: it is work its step does. MFU = model FLOPs/sample × samples/s / the device's
dense peak for the precision (PEAK_TFLOPS; fp32 = non-tensor-core fp32, PyTorch's default
with TF32 matmuls off). On a CPU MFU is null.

Prints one JSON line per (stage, configuration), then one with the ratios, and appends
the results to benchmarks/results.json ({"results": [...]}, read by `vlv-ray cost estimate`).
"""
from __future__ import annotations

import argparse
import datetime
import gc
import json
import resource
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vlv_ray.config import ConfigError, load_job  # noqa: E402
from vlv_ray.models import speed  # noqa: E402

# Dense (no sparsity) peak TFLOPS by device-name fragment: (bf16/fp16 tensor core, fp32).
# NVIDIA data sheets; the first fragment contained in torch.cuda.get_device_name() wins.
PEAK_TFLOPS = (
    ("H100 PCIe", (756.0, 51.2)), ("H100", (989.4, 66.9)), ("H200", (989.4, 66.9)),
    ("A100", (312.0, 19.5)), ("L40S", (362.1, 91.6)), ("RTX 6000 Ada", (364.2, 91.1)), ("L4", (121.0, 30.3)),
)
# The public code's stage-1 step: fp32, UNet recompute, (and below) the VAE encode every step.
PLAIN = ["model.compile=[]", "model.cuda_graphs=[]", "model.tower_input=fp32", "optim.fused=false"]
REFERENCE = {1: ["deepspeed.precision=fp32", "model.frozen_dtype=fp32", "model.attention=sdpa",
                 "model.gradient_checkpointing=[unet]", "model.channels_last=false", *PLAIN],
             2: ["deepspeed.precision=fp32", "model.frozen_dtype=fp32", "model.attention=sdpa",
                 "model.gradient_checkpointing=[]", *PLAIN]}
SPEED_KEYS = ("frozen_dtype", "attention", "gradient_checkpointing", "channels_last", "compile", "cuda_graphs",
              "tower_input")


def job_config(stage: int, preset: str, overrides: list[str]):
    """The paper job of `stage` with `overrides`; tiny swaps in the tiny preset's sizes."""
    base = [f"model.preset={preset}"] + (["data.resolution=32", "data.batch_size=4"] if preset == "tiny" else [])
    return load_job(ROOT / "jobs" / f"stage{stage}-paper.yaml", base + overrides)


class MasterAdamW:
    """AdamW on fp32 master copies of low-precision parameters (DeepSpeed bf16's scheme).

    flat=False: one master tensor per parameter (the 2026-11-26 rows; 1,128 tensors in stage
    2). flat=True (`optim.fused`): one flat fp32 master and one flat gradient, as DeepSpeed's
    ZeRO optimizer holds its partition, updated by torch's fused AdamW in a few kernels.
    """

    def __init__(self, params, lr: float, fused: bool, flat: bool = False):
        from torch._utils import _flatten_dense_tensors

        self.params = [p for p in params if p.requires_grad]
        self.flat = flat
        low = any(p.dtype != torch.float32 for p in self.params)
        if flat:
            self.master = [_flatten_dense_tensors([p.detach().float() for p in self.params]).requires_grad_(True)]
        else:
            self.master = [p.detach().float().clone().requires_grad_(True) for p in self.params] if low else self.params
        self.opt = torch.optim.AdamW(self.master, lr=lr, betas=(0.9, 0.99), weight_decay=0.01, fused=fused)

    def step(self) -> None:
        from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

        if self.flat:
            grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.params]
            self.master[0].grad = _flatten_dense_tensors(grads).float()
        elif self.master is not self.params:
            for m, p in zip(self.master, self.params):
                m.grad = p.grad.float() if p.grad is not None else None
        self.opt.step()
        with torch.no_grad():
            if self.flat:
                torch._foreach_copy_(self.params, list(_unflatten_dense_tensors(self.master[0], self.params)))
            elif self.master is not self.params:
                for m, p in zip(self.master, self.params):
                    p.copy_(m)
        for p in self.params:
            p.grad = None
        self.opt.zero_grad(set_to_none=True)


def build(stage: int, cfg, device: torch.device, cached: bool):
    """(trainable module, step-loss closure, batch size, caption tokens per sample)."""
    from vlv_ray.models import presets

    m, b, res = cfg.model, cfg.data.batch_size, cfg.data.resolution
    dtype = speed.DTYPES[cfg.deepspeed.precision]
    if m.preset == "tiny":
        encoder, decoder = presets.build_stage1("tiny", num_queries=m.num_queries, resolution=res, seed=0)
        encoder, decoder = encoder.to(device), decoder.to(device)
    else:
        encoder, decoder = presets.build_stage1("paper", num_queries=m.num_queries, resolution=res, empty=True,
                                                device=str(device), florence_path=m.florence,
                                                sd_path=m.stable_diffusion)
    frozen = speed.frozen_dtype(m, cfg.deepspeed.precision)
    images = torch.randint(0, 256, (b, res, res, 3), dtype=torch.uint8, device=device)
    if stage == 1:
        from vlv_ray.train.stage1 import Stage1

        decoder = decoder.to(dtype=frozen)
        encoder = encoder.to(dtype=dtype)
        modules = speed.stage1_modules(encoder, decoder)
        lat = res // 8
        moments = torch.randn((b, 2, 4, lat, lat), device=device).abs().to(torch.bfloat16)  # the cache's dtype
        batch = {"image": images, **({"latent": moments} if cached else {})}
        stage1 = SimpleNamespace(decoder=decoder, device=device)  # the job's own loss code, on these modules

        def loss_fn(gen):
            return Stage1.loss(stage1, encoder, batch, gen)

        return encoder, modules, loss_fn, b, 0
    text = decoder.text_encoder.to(dtype=frozen)
    del decoder
    from vlv_ray.models.caption_model import build_caption_model

    if m.preset == "tiny":
        model = build_caption_model(m, encoder, text, seed=0).to(device)
    else:
        model = build_caption_model(m, encoder, text, seed=0, empty=True, device=str(device))
    model.encoder.to(dtype=dtype)
    model.captioner.to(dtype=dtype)
    n_tok = m.max_caption_tokens  # every caption at the limit (end-of-text included): the paper's worst case
    vocab = model.captioner.llm.config.vocab_size
    tokens = torch.randint(0, vocab, (b, n_tok), device=device)
    mask = torch.ones_like(tokens)

    def loss_fn(gen):
        return model.captioner.loss_from_tokens(model.prefix(images), tokens, mask)

    return model, speed.stage2_modules(model), loss_fn, b, n_tok


def count_flops(loss_fn, trainable, device) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        gen = None if device.type == "meta" else torch.Generator(device=device).manual_seed(0)  # meta: no RNG
        loss_fn(gen).backward()
    for p in trainable.parameters():
        p.grad = None
    return float(counter.get_total_flops())


def optimizer(trainable, cfg, device) -> MasterAdamW:
    """optim.fused: flat buffers and torch's fused kernel (CPU too); else per-tensor masters,
    fused on a GPU as the 2026-11-26 rows ran."""
    fused = cfg.optim.fused or device.type == "cuda"
    return MasterAdamW(trainable.parameters(), lr=1e-5, fused=fused, flat=cfg.optim.fused)


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_tflops(device, precision: str) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for fragment, peaks in PEAK_TFLOPS:
        if fragment in name:
            return peaks[0] if precision in ("bf16", "fp16") else peaks[1]
    return None


def measure(stage: int, name: str, cfg, device, steps: int, warmup: int, cached: bool,
            flops_hint: float | None = None) -> dict:
    torch.manual_seed(0)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    trainable, modules, loss_fn, batch, n_tok = build(stage, cfg, device, cached)
    trainable.train()
    speed.apply(cfg.model, modules, compile=False)
    flops_source = "counted"
    try:
        flops = count_flops(loss_fn, trainable, device)
    except AssertionError as e:  # torch's sdpa formula refuses grouped-query shapes (Qwen2.5 in bf16)
        if flops_hint is None:
            raise
        flops, flops_source = flops_hint, f"the reference's count (same model and shapes; {e})"
    if device.type == "meta":  # FLOPs only: nothing runs
        return {"bench": "step_flops", "stage": stage, "preset": cfg.model.preset, "config": name, "device": "meta",
                "batch_size": batch, "resolution": cfg.data.resolution, "flops_per_sample": flops / batch,
                "tokens_per_sample": n_tok or None, "date": datetime.date.today().isoformat(),
                "command": " ".join(["python"] + sys.argv)}
    speed.compile_modules(cfg.model, modules)
    opt = optimizer(trainable, cfg, device)
    gen = torch.Generator(device=device)
    times, losses = [], []
    for i in range(warmup + steps):
        sync(device)
        t0 = time.perf_counter()
        speed.step_begin(cfg.model)
        loss = loss_fn(gen.manual_seed(i))
        loss.backward()
        opt.step()
        sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
        losses.append(loss.item())
    step_s = sorted(times)[len(times) // 2]  # the median: robust to a noisy shared machine
    sps = batch / step_s
    peak = peak_tflops(device, cfg.deepspeed.precision)
    out = {"bench": "step", "stage": stage, "preset": cfg.model.preset, "config": name,
           "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)",
           "precision": cfg.deepspeed.precision, "batch_size": batch, "resolution": cfg.data.resolution,
           "vae_encode_every_step": not cached if stage == 1 else None,
           **{f"model.{k}": getattr(cfg.model, k) for k in SPEED_KEYS}, "optim.fused": cfg.optim.fused,
           "step_s": round(step_s, 4), "samples_per_s": round(sps, 2), "samples_per_s_per_gpu": round(sps, 2),
           "tokens_per_s": round(sps * n_tok, 1) if stage == 2 else None,
           "flops_per_sample": flops / batch, "flops_source": flops_source,
           "mfu": round(flops / batch * sps / (peak * 1e12), 4) if peak else None,
           "peak_tflops": peak, "losses": [round(x, 4) for x in losses],
           "date": datetime.date.today().isoformat(), "command": " ".join(["python"] + sys.argv)}
    if device.type == "cuda":
        out["peak_mem_gb"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    else:  # CPU: the process's peak RSS so far (it only grows: configurations share the process)
        out["peak_rss_gb_process"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)
    del trainable, modules, loss_fn, opt
    gc.collect()
    return out


def append_results(path: Path, rows: list[dict]) -> None:
    data = json.loads(path.read_text()) if path.is_file() else {"results": []}
    data["results"].extend(rows)
    path.write_text(json.dumps(data, indent=1) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", choices=("tiny", "paper"), default="tiny")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--stages", default="1,2")
    ap.add_argument("--steps", type=int, default=None, help="timed steps (default 20 on a GPU, 3 on a CPU)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 5 on a GPU, 1 on a CPU)")
    ap.add_argument("--ours", action="append", default=[], metavar="KEY=VALUE", help="override ours' job keys")
    ap.add_argument("--batch-size", type=int, default=None, help="both configurations (default: the job's)")
    ap.add_argument("--results", default=str(ROOT / "benchmarks" / "results.json"), help="'' to skip")
    ap.add_argument("--no-reference", action="store_true", help="measure ours only (no fp32 reference, no ratio)")
    ap.add_argument("--label", default="ours", help="ours' `config` name in the rows (e.g. old-keys)")
    a = ap.parse_args(argv)
    device = torch.device(a.device)
    gpu = device.type == "cuda"
    steps, warmup = a.steps or (20 if gpu else 3), a.warmup if a.warmup is not None else (5 if gpu else 1)
    common = [f"data.batch_size={a.batch_size}"] if a.batch_size else []
    if not gpu:
        common.append("scaling.use_gpu=false")
    # meta: sdpa's causal-mask shortcut reads tensor values; eager attention counts the same matmuls.
    last = ["model.attention=eager"] if device.type == "meta" else []
    rows = []
    try:
        stages = [int(s) for s in a.stages.split(",")]
        configs = {s: {**({} if a.no_reference else
                          {"reference": job_config(s, a.preset, common + REFERENCE[s] + last)}),
                       a.label: job_config(s, a.preset, common + a.ours + last)} for s in stages}
    except (ConfigError, ValueError) as e:
        print(f"bench_step: error: {e}", file=sys.stderr)
        return 2
    for stage in stages:
        got = {}
        for name, cfg in configs[stage].items():
            try:
                # stage 2's model is the same in both configurations: ours may reuse the reference's FLOPs
                hint = got.get("reference", {}).get("flops_per_sample") if stage == 2 else None
                got[name] = measure(stage, name, cfg, device, steps, warmup, cached=name != "reference",
                                    flops_hint=hint * cfg.data.batch_size if hint else None)
            except torch.OutOfMemoryError as e:
                got[name] = {"bench": "step", "stage": stage, "preset": a.preset, "config": name,
                             "error": f"out of memory: {str(e).splitlines()[0]}"}
                gc.collect()
                torch.cuda.empty_cache()
            print(json.dumps(got[name]), flush=True)
            rows.append(got[name])
        ref, ours = got.get("reference", {}), got[a.label]
        if "samples_per_s" in ref and "samples_per_s" in ours:
            print(json.dumps({"bench": "step", "stage": stage, "preset": a.preset,
                              "ours_over_reference_samples_per_s": round(ours["samples_per_s"] / ref["samples_per_s"], 2)}),
                  flush=True)
    if a.results:
        append_results(Path(a.results), rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
