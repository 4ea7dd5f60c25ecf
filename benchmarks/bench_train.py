"""End-to-end training throughput: `vlv-ray train jobs/stage{1,2}-paper.yaml` on the path a
job really takes, its samples/s read from the run's own log lines.

    python benchmarks/bench_train.py --preset paper --steps 30 --workdir /tmp/vlv-e2e   # one GPU
    python benchmarks/bench_train.py --preset tiny --steps 6 --workdir /tmp/vlv-e2e     # CPU smoke run

What runs: synthetic images at the job's resolution → `vlv-ray data prepare` (parquet
shards, with captions of max_caption_tokens words so stage 2 runs at the length bench_step
assumes) → `vlv-ray data latents` (the latent cache; stage 1 then skips the VAE) → `vlv-ray
train` on a local Ray cluster: one Ray Train worker, its DeepSpeed engine, Ray Data
reading the shards, checkpoints every `--checkpoint-every` steps, then stage 2 on stage 1's
export. `paper`: models at paper sizes with random weights, built from the published
configs (vlv_ray/models/paper_configs.py) into `--workdir`/models (no model hub needed);
tokenizers there are word-level stand-ins (same ids range, no download).

Every step is logged (`logging.every_steps=1`) with its wall clock since the loop began.
From steps after `--skip` (compilation, warm-up) the row reports:
- `samples_per_s_per_gpu`: what the job would sustain with checkpoints at its configured
  interval: per-step wall time without a checkpoint (median) plus the measured checkpoint
  cost spread over the configured `checkpoint.every_steps`;
- `measured_samples_per_s_per_gpu`: the window as run (checkpoints every --checkpoint-every);
- `step_only_samples_per_s_per_gpu`: the log's own samples/s (forward, backward, step and
  the data wait, no checkpoint, no logging), the figure nearest bench_step's bare step.
MFU: model FLOPs per sample counted as bench_step counts them (meta device at paper sizes).
Appends rows {"bench": "train", ...} to --results (`vlv-ray cost estimate` prefers them).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

# A step's log line (vlv_ray/train/metrics.py: format_log_line), as Ray forwards it.
STEP = re.compile(r"\d\d:\d\d:\d\d step (?P<step>\d+)/\d+ \| loss (?P<loss>[-\d.e+naif]+) .*?"
                  r"\| (?P<sps>[\d.]+) samples/s \|.*?step (?P<step_s>[\d.]+)s \| data (?P<data_s>[\d.]+)s"
                  r".*?(?:\| mem (?P<mem>[\d.]+) GB )?\| wall (?P<wall>[\d.]+)s")


def parse_log(text: str) -> list[dict]:
    """Every step line of a run's output, in step order (one per step: the last wins)."""
    rows = {}
    for m in STEP.finditer(text):
        rows[int(m["step"])] = {"step": int(m["step"]), "loss": float(m["loss"]), "samples_per_s": float(m["sps"]),
                                "step_s": float(m["step_s"]), "data_s": float(m["data_s"]),
                                "mem_gb": float(m["mem"]) if m["mem"] else None, "wall_s": float(m["wall"])}
    return [rows[k] for k in sorted(rows)]


def throughput(steps: list[dict], *, skip: int, samples_per_step: int, ckpt_every_run: int,
               ckpt_every_job: int) -> dict:
    """Figures per GPU over the steps after `skip` (see the module docstring)."""
    window = [s for s in steps if s["step"] > skip]
    if len(window) < 3:
        raise ValueError(f"only {len(window)} logged steps after the first {skip}: run more --steps")
    prev = {s["step"]: s for s in steps}
    deltas = {s["step"]: s["wall_s"] - prev[s["step"] - 1]["wall_s"] for s in window if s["step"] - 1 in prev}
    after_ckpt = [d for k, d in deltas.items() if (k - 1) % ckpt_every_run == 0]  # the step after a checkpoint
    plain = [d for k, d in deltas.items() if (k - 1) % ckpt_every_run != 0]
    step_wall = statistics.median(plain)
    ckpt_s = max(0.0, statistics.mean(after_ckpt) - step_wall) if after_ckpt else None
    configured = step_wall + (ckpt_s or 0.0) / ckpt_every_job
    span = window[-1]["wall_s"] - window[0]["wall_s"]
    return {"samples_per_s_per_gpu": round(samples_per_step / configured, 3),
            "measured_samples_per_s_per_gpu": round(samples_per_step * (len(window) - 1) / span, 3),
            "step_only_samples_per_s_per_gpu": round(samples_per_step / statistics.median(
                s["step_s"] for s in window), 3),
            "step_wall_s": round(step_wall, 4), "checkpoint_s": round(ckpt_s, 3) if ckpt_s is not None else None,
            "checkpoints_in_window": len(after_ckpt), "data_wait_share": round(
                sum(s["data_s"] for s in window) / sum(s["step_s"] for s in window), 4),
            "window_steps": [window[0]["step"], window[-1]["step"]],
            "peak_mem_gb": max((s["mem_gb"] for s in window if s["mem_gb"]), default=None)}


def run_cli(args: list[str], log: Path, env: dict) -> str:
    """`vlv-ray ARGS` as a user runs it; its whole output is kept in `log`."""
    cmd = [sys.executable, "-m", "vlv_ray.cli", *args]
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    log.write_text(f"$ vlv-ray {' '.join(args)}\n{out.stdout}\n{out.stderr}")
    if out.returncode != 0:
        raise RuntimeError(f"vlv-ray {args[0]} {args[1] if len(args) > 1 else ''} failed "
                           f"({out.returncode}); see {log}:\n{(out.stdout + out.stderr)[-3000:]}")
    return out.stdout + out.stderr


def prepare_data(work: Path, *, images: int, resolution: int, caption_words: int, sd_dir: str, env: dict) -> str:
    """Shards with captions and a latent cache; returns the dataset's path."""
    from vlv_ray.data.synthetic import write_images
    from vlv_ray.models.captioner import TINY_WORDS

    data = work / "data"
    if (data / "manifest.json").is_file() and "latents" in json.loads((data / "manifest.json").read_text()):
        return str(data)
    src, captions = work / "images", work / "captions.jsonl"
    write_images(src, images, size=(resolution, resolution), seed=0)
    # Every caption at the token limit (one word = one token of the stand-in tokenizers).
    lines = [json.dumps({"key": f"img-{i:05d}", "caption": " ".join(TINY_WORDS[(i + j) % len(TINY_WORDS)]
                                                                      for j in range(caption_words))})
             for i in range(images)]
    captions.write_text("\n".join(lines) + "\n")
    run_cli(["data", "prepare", str(src), str(data), "--captions", str(captions), "--shard-rows", "64",
             "--row-group-rows", "16", "--overwrite"], work / "prepare.log", env)
    run_cli(["data", "latents", str(data), "--model", sd_dir, "--resolution", str(resolution),
             "--batch-size", "16"], work / "latents.log", env)
    return str(data)


def model_dirs(work: Path, preset: str, resolution: int, device: str) -> dict[str, str]:
    """Local model directories: the paper's models with random weights, or the tiny SD (for latents)."""
    import paper_models

    if preset == "paper":
        return paper_models.build(work / "models", device=device)
    return {"stable_diffusion": paper_models.save_tiny_sd(work / "models" / "tiny-sd", resolution)}


def flops_per_sample(stage: int, preset: str, overrides: list[str]) -> float | None:
    """Model FLOPs per sample, counted as bench_step counts them (meta device for paper)."""
    import torch

    import bench_step

    cfg = bench_step.job_config(stage, preset, overrides + ["model.attention=eager", "model.compile=[]",
                                                             "model.cuda_graphs=[]"])
    device = torch.device("meta" if preset == "paper" else "cpu")
    trainable, modules, loss_fn, batch, _ = bench_step.build(stage, cfg, device, cached=True)
    return bench_step.count_flops(loss_fn, trainable, device) / batch


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", choices=("tiny", "paper"), default="tiny")
    ap.add_argument("--stages", default="1,2")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--skip", type=int, default=None, help="first steps left out (default: a third of --steps)")
    ap.add_argument("--checkpoint-every", type=int, default=10)
    ap.add_argument("--images", type=int, default=None,
                    help="images prepared (default: one epoch covers the run, as 40M images would: no epoch restarts)")
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--override", action="append", default=[], metavar="KEY=VALUE", help="extra job overrides")
    ap.add_argument("--label", default="ours", help="the rows' `config`: ours = the jobs' keys (as bench_step names them)")
    ap.add_argument("--results", default=str(ROOT / "benchmarks" / "results.json"), help="'' to skip")
    a = ap.parse_args(argv)
    import torch

    gpu = torch.cuda.is_available()
    work = Path(a.workdir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    skip = a.skip if a.skip is not None else max(1, a.steps // 3)
    tiny = a.preset == "tiny"
    # tiny: its own sizes on CPU (no compile: a C++ build per module); paper: the job's keys.
    base = (["model.preset=tiny", "data.resolution=32", "data.batch_size=4", "model.compile=[]",
             "model.cuda_graphs=[]", "model.max_caption_tokens=24", "model.stable_diffusion=null"] if tiny else [])
    base += [] if gpu else ["scaling.use_gpu=false", "scaling.cpus_per_worker=1"]
    dirs = model_dirs(work, a.preset, 32 if tiny else 384, "cuda" if gpu else "cpu")
    if not tiny:
        base += [f"model.florence={dirs['florence']}", f"model.stable_diffusion={dirs['stable_diffusion']}",
                 f"model.llm={dirs['llm']}"]
    from vlv_ray.config import load_job

    rows = []
    stages = [int(s) for s in a.stages.split(",")]
    jobs = {s: load_job(ROOT / "jobs" / f"stage{s}-paper.yaml", base + a.override) for s in stages}
    images = a.images or max(64, (a.steps + 1) * max(c.data.batch_size for c in jobs.values()))
    for stage in stages:
        job, configured = ROOT / "jobs" / f"stage{stage}-paper.yaml", jobs[stage]
        resolution, batch = configured.data.resolution, configured.data.batch_size
        data = prepare_data(work, images=images, resolution=resolution,
                            caption_words=configured.model.max_caption_tokens - 1,
                            sd_dir=dirs["stable_diffusion"], env=env)
        name = f"e2e-{a.label}-stage{stage}-{int(time.time())}"
        over = base + a.override + [
            f"name={name}", f"storage_path={work / 'runs'}", f"data.uri={data}", f"max_steps={a.steps}",
            "optim.warmup_steps=1", "scaling.num_workers=1", "deepspeed.grad_accum_steps=1",
            f"checkpoint.every_steps={a.checkpoint_every}", "checkpoint.max_failures=0",
            "logging.every_steps=1", "logging.wandb=disabled"]
        if stage == 2:
            over.append(f"model.stage1={stage1_export(rows, work)}")
        command = f"vlv-ray train {job.relative_to(ROOT)} " + " ".join(over)
        text = run_cli(["train", str(job), *over], work / f"train-stage{stage}.log", env)
        steps = parse_log(text)
        figures = throughput(steps, skip=skip, samples_per_step=batch, ckpt_every_run=a.checkpoint_every,
                             ckpt_every_job=configured.checkpoint.every_steps)
        flops = flops_per_sample(stage, a.preset, base + a.override)
        peak = None
        if gpu:
            import bench_step

            peak = bench_step.peak_tflops(torch.device("cuda"), configured.deepspeed.precision)
        row = {"bench": "train", "stage": stage, "preset": a.preset, "config": a.label,
               "device": torch.cuda.get_device_name() if gpu else f"cpu ({os.cpu_count()} cores)",
               "precision": configured.deepspeed.precision, "batch_size": batch, "resolution": resolution,
               **figures, "flops_per_sample": flops,
               "mfu": round(flops * figures["samples_per_s_per_gpu"] / (peak * 1e12), 4) if peak and flops else None,
               "steps": a.steps, "checkpoint_every_run": a.checkpoint_every,
               "checkpoint_every_job": configured.checkpoint.every_steps,
               "cached_latents": "latents from" in text if stage == 1 else None, "run": name,
               "date": datetime.date.today().isoformat(), "command": command}
        print(json.dumps(row), flush=True)
        rows.append(row)
    if a.results and rows:
        from bench_step import append_results

        append_results(Path(a.results), rows)
    return 0


def stage1_export(rows: list[dict], work: Path) -> Path:
    """Stage 2 captions with this invocation's stage-1 run, else the newest one in `work`
    (so `--stages 2` can follow an earlier `--stages 1`, e.g. in a second device call)."""
    done = [r["run"] for r in rows if r["stage"] == 1]
    found = [work / "runs" / done[-1] / "export" / "stage1"] if done else sorted(
        (work / "runs").glob("e2e-*-stage1-*/export/stage1"), key=lambda p: p.stat().st_mtime)
    if not found or not found[-1].is_dir():
        raise SystemExit(f"bench_train: stage 2 needs a stage-1 export: run --stages 1 first (none in {work})")
    return found[-1]


if __name__ == "__main__":
    sys.exit(main())
