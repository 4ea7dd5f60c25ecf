"""Assemble a Ray Train `TorchTrainer` from a `JobConfig` and run it.

This is the only module that knows about Ray Train's configuration objects; the worker
side lives in `loop.py`.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from vlv_ray import storage
from vlv_ray.config import JobConfig

log = logging.getLogger(__name__)


def absolutize(uri: str) -> str:
    """Local relative paths become absolute: Ray workers do not share the driver's cwd."""
    if "://" in uri:
        return uri
    return str(Path(uri).expanduser().resolve())


def ensure_ray(num_cpus: int | None = None, address: str | None = None) -> None:
    """Connect to the cluster in RAY_ADDRESS/`address`, or start a local one.

    A local cluster gets at least 4 logical CPUs: the Ray Train workers hold one each and
    Ray Data's decode tasks need some left over, even on a 2-core laptop.
    """
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=True)
        return
    ray.init(
        num_cpus=num_cpus or max(4, os.cpu_count() or 1),
        include_dashboard=False,
        log_to_driver=True,
        configure_logging=False,
    )


def build_trainer(cfg: JobConfig, *, extra_loop_config: dict[str, Any] | None = None, local: bool = False):
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    from vlv_ray.train.loop import train_worker

    storage_kw = {"endpoint_url": cfg.storage.endpoint_url, "region": cfg.storage.region}
    fs, run_root = storage.resolve(absolutize(cfg.storage_path), **storage_kw)

    sc = cfg.scaling
    resources = {"CPU": sc.cpus_per_worker}
    if sc.use_gpu:
        resources["GPU"] = 1
    # num_workers=0 is Ray Train V2's local mode: the loop runs in this process (debugging).
    scaling = ray.train.ScalingConfig(
        num_workers=0 if local else sc.num_workers,
        use_gpu=sc.use_gpu,
        resources_per_worker=resources,
        accelerator_type=sc.accelerator_type,
    )
    run = ray.train.RunConfig(
        name=cfg.name,
        storage_path=run_root,
        storage_filesystem=fs,
        failure_config=ray.train.FailureConfig(max_failures=cfg.checkpoint.max_failures),
        checkpoint_config=ray.train.CheckpointConfig(num_to_keep=cfg.checkpoint.keep_last),
        # Workers inherit the driver's env for DeepSpeed's compiled-op cache.
        worker_runtime_env={"env_vars": _worker_env()},
    )
    job = cfg.to_dict(redact=False)
    job["logging"]["wandb_dir"] = absolutize(cfg.logging.wandb_dir)
    job["storage_path"], job["data"]["uri"] = absolutize(cfg.storage_path), absolutize(cfg.data.uri)
    if cfg.model.stage1:
        job["model"]["stage1"] = absolutize(cfg.model.stage1)
    loop_config = {"job": job, "local": local, "rejects_uri": rejects_uri(cfg), **(extra_loop_config or {})}
    return TorchTrainer(
        train_worker,
        train_loop_config=loop_config,
        scaling_config=scaling,
        run_config=run,
        torch_config=TorchConfig(backend="nccl" if sc.use_gpu else "gloo"),
        # No `datasets=`: each worker reads its own part of the plan (train/batches.py).
    )


def rejects_uri(cfg: JobConfig) -> str:
    """Where decode tasks record the rows they dropped: `<storage_path>/<name>/rejects/`."""
    return storage.join(absolutize(cfg.storage_path), cfg.name, "rejects")


def _worker_env() -> dict[str, str]:
    keep = ("TORCH_EXTENSIONS_DIR", "WANDB_MODE")
    env = {k: os.environ[k] for k in keep if k in os.environ}
    # Ray Train 2.60 patches `print` in workers to tee into its logger, which shows every
    # log line twice on the driver; our lines are already formatted for people.
    env["RAY_TRAIN_ENABLE_PRINT_PATCH"] = "0"
    return env


def run(cfg: JobConfig, *, extra_loop_config: dict[str, Any] | None = None, local: bool = False):
    """Run (or resume: same name + storage_path) a training job; return Ray's `Result`."""
    from vlv_ray.data.pipeline import shard_paths

    # Fail on a missing or empty dataset before paying for a cluster start.
    shard_paths(absolutize(cfg.data.uri), endpoint_url=cfg.storage.endpoint_url, region=cfg.storage.region)
    ensure_ray()
    trainer = build_trainer(cfg, extra_loop_config=extra_loop_config, local=local)
    # --- cost wiring: the driver meters the cluster's nodes while the run lives (vlv_ray/cost/tracker.py)
    from vlv_ray.cost.tracker import track

    with track(cfg, storage.join(absolutize(cfg.storage_path), cfg.name)):
        result = trainer.fit()
    from vlv_ray.data.pipeline import count_rejects

    dropped = count_rejects(rejects_uri(cfg), endpoint_url=cfg.storage.endpoint_url, region=cfg.storage.region)
    if dropped:
        summary = ", ".join(f"{k}={v}" for k, v in sorted(dropped.items()))
        print(f"dropped {sum(dropped.values())} rows during training ({summary}); keys in {rejects_uri(cfg)}",
              flush=True)
    if result.error is None and result.checkpoint is not None and not local:
        from vlv_ray.train.checkpoint import export_trainable

        print(f"exported trainable weights: {export_trainable(result.checkpoint, cfg)} "
              f"(load with vlv_ray.models.export.load_stage{cfg.stage})", flush=True)
    return result
