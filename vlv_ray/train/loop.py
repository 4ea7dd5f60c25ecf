"""The training step loop, shared by every stage. Read it top to bottom.

Runs inside each Ray Train worker: build the stage's model → DeepSpeed engine holding
only the trainable parameters → resume from Ray's latest checkpoint if there is one →
for each step: learning rate for this step, gradient-accumulation micro-steps, optimizer
step, one log line on rank 0, a checkpoint every N steps and at the end.
"""
from __future__ import annotations

import math
import os
import signal
import time
from typing import Any

import torch

from vlv_ray.config import JobConfig, OptimConfig, from_dict


def lr_at(step: int, max_steps: int, opt: OptimConfig) -> float:
    """Linear warm-up, then one decay over the whole run down to `lr × min_lr_ratio`.

    The decay spans exactly [warmup_steps, max_steps]: it never restarts (the public VLV
    code's DeepSpeed WarmupCosineLR restarted every 40K steps of a 200K-step run).
    """
    if step < opt.warmup_steps:
        return opt.lr * (step + 1) / opt.warmup_steps
    floor = opt.lr * opt.min_lr_ratio
    if opt.schedule == "constant":
        return opt.lr
    progress = min(1.0, (step - opt.warmup_steps) / max(1, max_steps - opt.warmup_steps))
    if opt.schedule == "linear":
        return floor + (opt.lr - floor) * (1.0 - progress)
    return floor + (opt.lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def deepspeed_config(cfg: JobConfig) -> dict[str, Any]:
    ds, opt = cfg.deepspeed, cfg.optim
    zero: dict[str, Any] = {"stage": ds.zero_stage}
    if ds.offload_optimizer != "none":
        zero["offload_optimizer"] = {"device": ds.offload_optimizer}
    if ds.offload_param != "none":
        zero["offload_param"] = {"device": ds.offload_param}
    return {
        "train_micro_batch_size_per_gpu": cfg.data.batch_size,
        "gradient_accumulation_steps": ds.grad_accum_steps,
        "gradient_clipping": opt.grad_clip,
        "zero_optimization": zero,
        "bf16": {"enabled": ds.precision == "bf16"},
        "fp16": {"enabled": ds.precision == "fp16"},
        # torch_adam: torch's AdamW instead of DeepSpeed's JIT-compiled C++/CUDA op.
        "optimizer": {
            "type": "AdamW",
            "params": {
                "lr": opt.lr,
                "betas": list(opt.betas),
                "eps": opt.eps,
                "weight_decay": opt.weight_decay,
                "torch_adam": True,
            },
        },
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }


def train_worker(loop_config: dict[str, Any]) -> None:
    """Ray Train's entry point on every worker."""
    cfg: JobConfig = from_dict(loop_config["job"])
    own_group = not torch.distributed.is_initialized()
    if own_group:  # Ray Train's local mode (--local): a process group of one
        _init_single_process_group()
    try:
        _train(cfg, loop_config)
    finally:
        if own_group:
            torch.distributed.destroy_process_group()


def _train(cfg: JobConfig, loop_config: dict[str, Any]) -> None:
    import deepspeed
    import ray.train

    from vlv_ray.train import checkpoint, preempt
    from vlv_ray.train.batches import Batches
    from vlv_ray.train.metrics import MetricsLogger
    from vlv_ray.train.stages import build_stage

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = torch.device("cuda", torch.cuda.current_device()) if cfg.scaling.use_gpu else torch.device("cpu")

    torch.manual_seed(cfg.seed)  # every rank builds identical initial weights
    stage = build_stage(cfg, device)
    ckpt, state = checkpoint.find(cfg)  # (None, {}) on a fresh run
    universal = checkpoint.needs_universal(state, world, cfg)
    ds_config = deepspeed_config(cfg)
    if universal:
        ds_config["checkpoint"] = {"load_universal": True}
        if rank == 0:
            print(f"[vlv-ray] checkpoint written by {state['world_size']} workers, resuming on {world}: "
                  "converting it to DeepSpeed's universal format", flush=True)
    engine, _, _, _ = deepspeed.initialize(
        model=stage.trainable,
        model_parameters=[p for p in stage.trainable.parameters() if p.requires_grad],
        config=ds_config,
    )
    preempt.install()
    if ckpt is not None:
        checkpoint.restore(engine, ckpt, state, universal=universal)
    resumed = bool(state)
    step = state.get("step", 0)
    logger = MetricsLogger(cfg, rank)
    data = Batches(cfg, rank, world, state.get("data"), stage.collate,
                   data_uri=cfg.data.uri, rejects_uri=loop_config.get("rejects_uri"),
                   vae_digest=getattr(stage, "vae_digest", None))
    if rank == 0:
        where = f"resuming at step {step}, epoch {data.epoch}" if state else "starting fresh"
        n_train = sum(p.numel() for p in stage.trainable.parameters() if p.requires_grad)
        cache = f", latents from {data.cache['dir']} ({data.cache['dtype']})" if data.cache else ""
        print(f"[vlv-ray] {cfg.name}: stage {cfg.stage}, {world} workers, ZeRO-{cfg.deepspeed.zero_stage}, "
              f"{cfg.deepspeed.precision}, {n_train / 1e6:.2f}M trainable params{cache}, {where}", flush=True)
    hooks = loop_config.get("test_hooks", {})
    started_at, run_start_step = time.time(), step
    samples_per_step = cfg.global_batch_size
    while step < cfg.max_steps:
        t0 = time.perf_counter()
        # Every random draw is a function of (seed, step, rank[, micro]): dropout uses the global
        # generator, seeded here; noise and timesteps a generator per micro-step (below). So a
        # checkpoint needs no RNG state, and a resumed run draws exactly what it would have.
        torch.manual_seed(((cfg.seed * 1_000_003 + step) * 4099 + rank) % (2**63))
        lr = lr_at(step, cfg.max_steps, cfg.optim)
        for group in engine.optimizer.param_groups:
            group["lr"] = lr
        data_wait, loss_sum, keys, tokens = 0.0, 0.0, [], 0
        for micro in range(cfg.deepspeed.grad_accum_steps):
            td = time.perf_counter()
            epoch, batch = data.next()
            data_wait += time.perf_counter() - td
            keys += batch["key"]
            tokens += batch.get("tokens", 0)
            # A per-(step, rank, micro) generator: noise and timesteps replay exactly on resume.
            gen = torch.Generator(device=device).manual_seed(
                ((cfg.seed * 1_000_003 + step) * 4099 + rank) * 131 + micro)
            loss = stage.loss(engine, batch, gen)
            engine.backward(loss)
            engine.step()
            loss_sum += loss.item()
        step += 1
        step_time = time.perf_counter() - t0

        loss_avg = loss_sum / cfg.deepspeed.grad_accum_steps
        loss_sum_all, rejected, tokens_all = _sum_across_ranks([loss_avg, data.rejected, tokens], world)
        metrics = {
            "step": step, "epoch": epoch, "loss": loss_sum_all / world, "lr": lr,
            "grad_norm": float(engine.get_global_grad_norm() or 0.0),
            "samples_per_s": samples_per_step / step_time, "tokens_per_s": tokens_all / step_time,
            "step_time_s": step_time,
            "data_wait_s": data_wait, "rejected_rows": state.get("rejected_rows", 0) + int(rejected),
            "resumed_from": run_start_step,
            "cost_usd": _cost_so_far(cfg, state, started_at, world),
        }
        if rank == 0 and (step % cfg.logging.every_steps == 0 or step == cfg.max_steps or step == run_start_step + 1):
            print(format_log_line(metrics, cfg.max_steps), flush=True)
            logger.log(metrics, step)
        every = cfg.logging.eval_every_steps
        if every and step % every == 0 and hasattr(stage, "evaluate"):
            result = stage.evaluate(engine, batch, cfg)  # every rank: ZeRO-3 gathers weights collectively
            if rank == 0:
                print(f"[vlv-ray] eval at step {step}: {', '.join(logger.log_eval(result, step))}", flush=True)
        _trace(hooks, rank, step, keys)
        if hooks.get("sigterm_after_step") == step and rank == hooks.get("signal_rank", 0) and not resumed:
            preempt.signal_self_for_test()
        stop = preempt.requested(world)
        # Local mode (--local) is for debugging: Ray does not persist its checkpoints, so none is taken.
        due = stop or step % cfg.checkpoint.every_steps == 0 or step == cfg.max_steps
        if due and loop_config.get("local"):
            ray.train.report(metrics)
        elif due:
            state = {**state, "step": step, "epoch": epoch, "cost_usd": metrics["cost_usd"],
                     "config_hash": cfg.config_hash(), "world_size": world, "data": data.state(),
                     "rejected_rows": metrics["rejected_rows"]}
            checkpoint.save(engine, state, metrics, rank, cfg, hooks=hooks)
            started_at = time.time()
        if stop:
            logger.close()
            raise preempt.Preempted(f"SIGTERM: checkpointed step {step}; Ray Train will resume from it")
        if hooks.get("kill_after_step") == step and rank == hooks.get("signal_rank", 0) and not resumed:
            os.kill(os.getpid(), signal.SIGKILL)  # test-only: a worker dying without warning
    logger.close()


def _init_single_process_group() -> None:
    """A gloo group of one, with the torchrun-style variables DeepSpeed insists on."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for k, v in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "LOCAL_WORLD_SIZE": "1",
                 "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}.items():
        os.environ[k] = v  # not setdefault: a stale MASTER_PORT would collide
    torch.distributed.init_process_group("gloo", init_method="env://", rank=0, world_size=1)


def _trace(hooks: dict, rank: int, step: int, keys: list[str]) -> None:
    """Test-only: append (rank, step, keys trained on) to a file: which steps ran, on what."""
    if hooks.get("trace_file"):
        with open(hooks["trace_file"], "a") as f:
            f.write(f"{rank} {step} {','.join(keys)}\n")


def _sum_across_ranks(values: list[float], world: int) -> list[float]:
    if world == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64)
    torch.distributed.all_reduce(t)
    return t.tolist()


def _cost_so_far(cfg: JobConfig, state: dict, started_at: float, world: int) -> float:
    """Dollars: worker-hours since the last checkpoint × price, plus what the ledger holds."""
    price = cfg.cost.price_per_worker_hour_usd or 0.0
    return state.get("cost_usd", 0.0) + (time.time() - started_at) / 3600.0 * world * price


def format_log_line(m: dict[str, Any], max_steps: int) -> str:
    tokens = f"{m['tokens_per_s']:.0f} tok/s | " if m.get("tokens_per_s") else ""  # stage 2
    return (f"{time.strftime('%H:%M:%S')} step {m['step']}/{max_steps} | loss {m['loss']:.4f} | lr {m['lr']:.2e} | "
            f"gnorm {m['grad_norm']:.3f} | {m['samples_per_s']:.1f} samples/s | {tokens}"
            f"step {m['step_time_s']:.2f}s | data {m['data_wait_s']:.2f}s | "
            f"rejected {m['rejected_rows']} | ${m['cost_usd']:.4f}")
