"""Assemble a Ray Train `TorchTrainer` from a `JobConfig` and run it.

This is the only module that knows about Ray Train's configuration objects; the worker
side lives in `loop.py`.
"""
from __future__ import annotations

import contextlib
import logging
import os
from typing import Any

from vlv_ray import storage
from vlv_ray.config import JobConfig
from vlv_ray.paths import RunPaths, for_job
from vlv_ray.train import auth, quiet

log = logging.getLogger(__name__)


def ensure_ray(num_cpus: int | None = None, address: str | None = None) -> None:
    """Connect to the cluster in RAY_ADDRESS/`address`, or start a local one.

    A local cluster gets at least 4 logical CPUs: the Ray Train workers hold one each and
    Ray Data's decode tasks need some left over, even on a 2-core laptop.
    """
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    # Ray's own actors (Ray Train's placement-group cleaner, above all) log a warning every
    # second when the state API is slow or absent (a local cluster has no dashboard);
    # errors still show.
    logging_config = ray.LoggingConfig(log_level="ERROR")
    if address:
        auth.use_token_if_available()  # Ray sends the token only when told to
        ray.init(address=address, log_to_driver=True, logging_config=logging_config)
        return
    # Nothing drains the nodes of a cluster this process starts, so Ray Train's preemption
    # watcher has nothing to watch; it only logs an error-level line (its actor's restart
    # arguments) on every run. Spot SIGTERMs are ours to handle anyway (preempt.py).
    os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
    # Token auth, as Ray's default for a new cluster, without its warning saying so.
    auth.use_token_for_new_cluster()
    # Ray Train's placement-group cleaner (a detached actor) finds the state API by looking
    # for "the" Ray instance on the machine: with two running it dies with a 30-line
    # traceback; without a dashboard it warns every second. So the cluster's processes are
    # told its address, and the cluster gets a dashboard (on free ports).
    gcs_port, dash_port = _free_port(), _free_port()
    own = {"RAY_GCS_SERVER_PORT": str(gcs_port), "RAY_ADDRESS": f"{ray.util.get_node_ip_address()}:{gcs_port}"}
    saved = {k: os.environ.get(k) for k in own}
    os.environ.update(own)  # inherited by the processes ray.init starts
    try:
        ray.init(
            address="local",  # start one; RAY_ADDRESS above is for the cluster's processes
            num_cpus=num_cpus or max(4, os.cpu_count() or 1),
            include_dashboard=True,
            dashboard_host="127.0.0.1",
            dashboard_port=dash_port,
            log_to_driver=True,
            configure_logging=False,
            logging_config=logging_config,
        )
    finally:  # this process may start another cluster later (tests, demo)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def build_trainer(cfg: JobConfig, paths: RunPaths, *, local: bool = False):
    """`cfg` and `paths` as `paths.for_job` makes them (local paths absolute)."""
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    fs, run_root = storage.resolve(cfg.storage_path, **paths.storage)

    sc = cfg.scaling
    resources = worker_resources(cfg)
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
        # No num_to_keep: checkpoint.save prunes (Ray would keep no track of earlier drivers' checkpoints).
        checkpoint_config=ray.train.CheckpointConfig(num_to_keep=None),
        worker_runtime_env={"env_vars": _worker_env(sc.use_gpu)},
        # Ray Train's info lines (resources requested, worker group started, every report)
        # go to its log files only; our step lines say what matters.
        logging_config=ray.train.LoggingConfig(log_level="WARNING"),
    )
    loop_config = {"job": cfg.to_dict(redact=False), "paths": paths.to_dict(), "local": local}
    return TorchTrainer(
        _train_worker,
        train_loop_config=loop_config,
        scaling_config=scaling,
        run_config=run,
        torch_config=TorchConfig(backend="nccl" if sc.use_gpu else "gloo"),
        # No `datasets=`: each worker reads its own part of the plan (train/batches.py).
    )


def worker_resources(cfg: JobConfig) -> dict[str, float]:
    resources = {"CPU": cfg.scaling.cpus_per_worker}
    if cfg.scaling.use_gpu:
        resources["GPU"] = 1
    return resources


def _worker_env(use_gpu: bool) -> dict[str, str]:
    env = quiet.process_env(use_gpu)
    if "WANDB_MODE" in os.environ:
        env["WANDB_MODE"] = os.environ["WANDB_MODE"]
    return env


def _train_worker(loop_config: dict[str, Any]) -> None:
    from vlv_ray.train.loop import train_worker

    quiet.in_worker()
    train_worker(loop_config)


def run(cfg: JobConfig, *, paths: RunPaths | None = None, local: bool = False, allow_changes: bool = False):
    """Run (or resume: same name + storage_path) a training job; return Ray's `Result`.

    `paths`: the run's, from `paths.for_job(cfg)` where the caller loaded the job (then `cfg`
    is that call's absolutized job); built here when not given.
    """
    import ray.train

    from vlv_ray.cost.tracker import track
    from vlv_ray.data.pipeline import shard_paths
    from vlv_ray.train import precheck

    if paths is None:
        cfg, paths = for_job(cfg)
    # Fail on bad input before paying for a cluster start.
    shard_paths(cfg.data.uri, **paths.storage)
    precheck.stage1_export(cfg, paths)
    # Local mode (--local) is for debugging and leaves storage alone: no lease, nothing written.
    lease = None if local else precheck.take_lease(cfg, paths)
    try:
        precheck.resume_settings(cfg, paths, allow_changes=allow_changes)
        quiet.apply_to_this_process(cfg.scaling.use_gpu)
        ensure_ray()
        if not local:
            precheck.placeable(cfg, worker_resources(cfg))
        # Ray's own record of reported checkpoints would name ones that vlv-ray pruned or found
        # damaged, and Ray refuses to start over a missing one; resume reads storage (checkpoint.find).
        storage.delete(storage.join(paths.run, "checkpoint_manager_snapshot.json"), **paths.storage)
        # The driver meters the cluster's nodes while the run lives (vlv_ray/cost/tracker.py);
        # a --local debugging run writes no ledger.
        metered = contextlib.nullcontext() if local else track(cfg, paths)
        try:
            with metered:
                result = build_trainer(cfg, paths, local=local).fit()
        except ray.train.TrainingFailedError as e:
            from vlv_ray.train.failure import TrainingFailed, describe

            raise TrainingFailed(describe(e, paths)) from None
        _after(cfg, paths, result, local)
    finally:
        if lease is not None:
            lease.release()
    return result


def _after(cfg: JobConfig, paths: RunPaths, result, local: bool) -> None:
    from vlv_ray.data.pipeline import count_rejects

    dropped = count_rejects(paths.rejects, **paths.storage)
    if dropped:
        summary = ", ".join(f"{k}={v}" for k, v in sorted(dropped.items()))
        print(f"dropped {sum(dropped.values())} rows during training ({summary}); keys in {paths.rejects}",
              flush=True)
    if result.error is None and result.checkpoint is not None and not local:
        from vlv_ray.train.checkpoint import export_trainable

        with quiet.captured():  # DeepSpeed's consolidation chatter; shown if it fails
            exported = export_trainable(result.checkpoint, cfg, paths)
        print(f"exported trainable weights: {exported} "
              f"(load with vlv_ray.models.export.load_stage{cfg.stage})", flush=True)
