"""The training step loop, shared by every stage. Read `_train` top to bottom.

Runs inside each Ray Train worker: build the stage's model → find the resume point →
DeepSpeed engine holding only the trainable parameters → then, until `max_steps`: one
train step (learning rate, gradient-accumulation micro-steps, optimizer step), its
metrics, the log line and evaluation when due, your callbacks, and a checkpoint when one
is due or the run must stop now.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

import ray.train
import torch

from vlv_ray.config import JobConfig, from_dict
from vlv_ray.paths import RunPaths
from vlv_ray.train import checkpoint, lease, preempt
from vlv_ray.train.batches import Batches
from vlv_ray.train.callbacks import Callbacks, StepEnd
from vlv_ray.train.checkpoint import Checkpointer
from vlv_ray.cost.live import LiveCost
from vlv_ray.eval.during import ImagesSeenEval
from vlv_ray.models import speed
from vlv_ray.train.engine import build_engine, destroy_process_group
from vlv_ray.train.metrics import MetricsLogger
from vlv_ray.train.schedule import lr_at, step_seed
from vlv_ray.train.stage import Stage
from vlv_ray.train.state import TrainerState


def train_worker(loop_config: dict[str, Any]) -> None:
    """Ray Train's entry point on every worker."""
    cfg: JobConfig = from_dict(loop_config["job"])  # its local paths already absolute (paths.for_job)
    paths = RunPaths(**loop_config["paths"])
    own_group = not torch.distributed.is_initialized()
    if own_group:  # Ray Train's local mode (--local): a process group of one
        _init_single_process_group()
    try:
        _train(cfg, paths, local=bool(loop_config.get("local")), driver=loop_config.get("driver") or {})
    finally:
        if own_group:
            destroy_process_group()  # DeepSpeed's: it also drops the groups it cached


def build_stage(cfg: JobConfig, device: torch.device) -> Stage:
    """The job's stage (stage.py says what a stage is; stage1.py and stage2.py what differs)."""
    if cfg.stage == 1:
        from vlv_ray.train.stage1 import Stage1

        return Stage1(cfg, device)
    if cfg.stage == 2:
        from vlv_ray.train.stage2 import Stage2

        return Stage2(cfg, device)
    raise ValueError(f"stage: got {cfg.stage}, expected 1 or 2")


def _train(cfg: JobConfig, paths: RunPaths, *, local: bool, driver: dict[str, Any]) -> None:
    """`driver`: from launch.build_trainer: its lease's owner id, whether it took the run over,
    and the key it sets to stop the run (preempt.DriverStop)."""
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = torch.device("cuda", torch.cuda.current_device()) if cfg.scaling.use_gpu else torch.device("cpu")

    torch.manual_seed(cfg.seed)  # every rank builds identical initial weights
    owner = driver.get("lease_owner")
    lease.check_owned(paths.run, owner, **paths.storage)  # a restart after a takeover
    stage = build_stage(cfg, device)
    ckpt, saved = checkpoint.find(paths, clean=not driver.get("took_over"))  # (None, {}) on a fresh run
    state, resumed = TrainerState.from_dict(saved), ckpt is not None
    universal = checkpoint.needs_universal(saved, world, cfg)
    engine = build_engine(stage, cfg, load_universal=universal)
    preempt.install()
    if resumed:
        checkpoint.restore(engine, ckpt, saved, universal=universal)
    data = Batches(cfg, rank, world, state.data, stage.collate, data_uri=cfg.data.uri,
                   rejects_uri=paths.rejects, vae_digest=stage.vae_digest)
    logger = MetricsLogger(cfg, paths, rank, first_step=state.step)
    by_images = ImagesSeenEval(cfg, paths, rank, world)  # reconstruction FID at logging.eval_every_images
    callbacks = Callbacks(cfg.callbacks)
    checkpointer = Checkpointer(cfg, paths, rank, local=local, callbacks=callbacks, lease_owner=owner)
    cost = LiveCost(cfg, rank, world, state.step, state.cost_usd)  # the driver's ledger; budget guard
    if rank == 0:
        _announce(cfg, stage, data, world, state, resumed, universal)

    step, first_step, rejected_before = state.step, state.step, state.rejected_rows
    started = time.perf_counter()
    try:
        while step < cfg.max_steps:
            out = train_step(engine, stage, data, cfg, step, rank, device)
            step += 1
            metrics = _step_metrics(out, engine, data, step, world, rejected_before, first_step, cost)
            metrics["wall_s"] = time.perf_counter() - started  # since the loop began: checkpoints included
            logger.log_step(metrics)
            logger.evaluate_if_due(stage, engine, out.batch, step)
            by_images.after_step(stage, engine, step, metrics, logger.run)
            callbacks.step_end(StepEnd(step=step, rank=rank, world=world, epoch=out.epoch, keys=out.keys, metrics=metrics,
                                       resumed=resumed, cfg=cfg, engine=engine))
            stop = _stop_requested(world, rank, driver.get("stop_key"))
            over_budget = cost.over_budget(step)  # collective; a clean end, not a restart
            if checkpointer.due(step, bool(stop) or over_budget):
                state = TrainerState(step=step, epoch=out.epoch, cost_usd=metrics["cost_usd"],
                                     config_hash=cfg.config_hash(), world_size=world, data=data.state(),
                                     rejected_rows=metrics["rejected_rows"], extra=state.extra)
                checkpointer.save(engine, state, metrics)
            if stop == "preempted":
                raise preempt.Preempted(f"stop requested: checkpointed step {step}; Ray Train will resume from it")
            if stop == "stopped":  # the driver was told to stop: the run ends here (launch.py says how to resume)
                break
            if over_budget:
                if rank == 0:  # what was spent, and how to resume with a larger budget
                    print(f"[vlv-ray] {cost.message}", flush=True)
                break
    finally:
        callbacks.close()
        logger.close()


@dataclass
class StepResult:
    loss: float  # mean over micro-steps, this rank
    lr: float
    epoch: int
    keys: list[str]  # rows trained on, in order
    tokens: int  # target tokens (stage 2), else 0
    batch: dict[str, Any]  # the last micro-batch (evaluation looks at its first images)
    data_wait_s: float
    step_time_s: float


def train_step(engine, stage, data, cfg: JobConfig, step: int, rank: int, device: torch.device) -> StepResult:
    """One optimizer step: `grad_accum_steps` micro-batches, forward, backward, step."""
    t0 = time.perf_counter()
    torch.manual_seed(step_seed(cfg.seed, step, rank))  # dropout draws replay on resume
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
        gen = torch.Generator(device=device).manual_seed(step_seed(cfg.seed, step, rank, micro))  # noise, timesteps
        speed.step_begin(cfg.model)
        loss = stage.loss(engine, batch, gen)
        engine.backward(loss)
        engine.step()
        loss_sum += loss.item()
    return StepResult(loss_sum / cfg.deepspeed.grad_accum_steps, lr, epoch, keys, tokens, batch, data_wait,
                      time.perf_counter() - t0)


def _step_metrics(out: StepResult, engine, data, step: int, world: int, rejected_before: int,
                  first_step: int, cost) -> dict[str, Any]:
    """The step's metrics, summed or averaged over ranks. Collective: every rank calls it."""
    loss_sum, rejected, tokens = _sum_across_ranks([out.loss, data.rejected, out.tokens], world)
    return {
        "step": step, "epoch": out.epoch, "loss": loss_sum / world, "lr": out.lr,
        "grad_norm": float(engine.get_global_grad_norm() or 0.0),
        "samples_per_s": len(out.keys) * world / out.step_time_s, "tokens_per_s": tokens / out.step_time_s,
        "step_time_s": out.step_time_s, "data_wait_s": out.data_wait_s,
        "rejected_rows": rejected_before + int(rejected), "resumed_from": first_step,
        "cost_usd": cost.spent(),
        # This rank's peak GPU memory so far (benchmarks/bench_train.py reads it from the log line).
        **({"peak_mem_gb": torch.cuda.max_memory_allocated() / 2**30} if torch.cuda.is_initialized() else {}),
    }


def _stop_requested(world: int, rank: int, stop_key: str | None) -> str | None:
    """The one "stop now" decision, agreed by every rank (collective): on it, every rank
    checkpoints this step; "preempted" (a SIGTERM on any rank) then hands the run back to Ray
    Train to resume, "stopped" (the driver got SIGTERM/SIGINT) ends it."""
    return preempt.stop_reason(world, rank, stop_key)


def _announce(cfg: JobConfig, stage, data, world: int, state, resumed: bool, universal: bool) -> None:
    if universal:
        print(f"[vlv-ray] checkpoint written by {state.world_size} workers, resuming on {world}: "
              "converting it to DeepSpeed's universal format", flush=True)
    where = f"resuming at step {state.step}, epoch {data.epoch}" if resumed else "starting fresh"
    n_train = sum(p.numel() for p in stage.trainable.parameters() if p.requires_grad)
    cache = f", latents from {data.cache['dir']} ({data.cache['dtype']})" if data.cache else ""
    print(f"[vlv-ray] {cfg.name}: stage {cfg.stage}, {world} workers, ZeRO-{cfg.deepspeed.zero_stage}, "
          f"{cfg.deepspeed.precision}, {n_train / 1e6:.2f}M trainable params{cache}, {where}", flush=True)


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


def _sum_across_ranks(values: list[float], world: int) -> list[float]:
    if world == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64)
    torch.distributed.all_reduce(t)
    return t.tolist()
