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
from vlv_ray.storage import StorageError
from vlv_ray.config import ConfigError, JobConfig
from vlv_ray.paths import RunPaths, for_job
from vlv_ray.train import auth, quiet, reach

log = logging.getLogger(__name__)


def ensure_ray(num_cpus: int | None = None, address: str | None = None) -> None:
    """Connect to the cluster in RAY_ADDRESS/`address`, or start a local one.

    A local cluster gets at least 4 logical CPUs: the Ray Train workers hold one each and
    Ray Data's decode tasks need some left over, even on a 2-core laptop.
    """
    import ray

    if ray.is_initialized():
        return
    address = cluster_address(address)
    # Ray's own actors (Ray Train's placement-group cleaner, above all) log a warning every
    # second when the state API is slow or absent (a local cluster has no dashboard);
    # errors still show.
    logging_config = ray.LoggingConfig(log_level="ERROR")
    # Ray Train's preemption watcher logs an error-level line (its actor's restart arguments)
    # on every run, local or attached. Spot notices are ours to handle: a worker's SIGTERM
    # checkpoints and resumes (preempt.py). Ray Train passes this variable on to its controller.
    os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
    if address:
        auth.use_token_if_available()  # Ray sends the token only when told to
        # Ray Train's placement-group cleaner (a detached actor on the head) finds the state
        # API by looking for "the" Ray instance on its machine; with two there it dies with a
        # 30-line traceback. Tasks and actors of this job are told the cluster's address.
        job_env = {"env_vars": {"RAY_ADDRESS": address}} if _is_gcs_address(address) else None
        ray.init(address=address, log_to_driver=True, logging_config=logging_config, runtime_env=job_env)
        return
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


def cluster_address(address: str | None = None) -> str | None:
    """`address` or RAY_ADDRESS, once something answers there (in seconds: `ray.init` would wait
    more than 10 minutes for a dead one); None: no cluster named, start a local one."""
    source = "address" if address else "RAY_ADDRESS"
    address = address or os.environ.get("RAY_ADDRESS")
    if not address or address in ("auto", "local"):  # Ray's own words: find the running one, start one
        return address
    why = reach.unreachable(address)
    if why:
        raise ConfigError(f"{source}={address}: {why}; expected a running cluster's address (HOST:6379), "
                          "or no RAY_ADDRESS to start a local cluster")
    return address


def _is_gcs_address(address: str) -> bool:
    """HOST:PORT of a cluster's GCS (not "auto", not a ray:// client address), and not inside a
    submitted job, whose runtime env Ray has set already."""
    return "://" not in address and ":" in address and "RAY_JOB_CONFIG_JSON_ENV_VAR" not in os.environ


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def build_trainer(cfg: JobConfig, paths: RunPaths, *, local: bool = False, lease=None, stop_key: str | None = None):
    """`cfg` and `paths` as `paths.for_job` makes them (local paths absolute). `lease`: the
    driver's (its owner id lets workers check they still hold the run); `stop_key`: the flag
    `preempt.DriverStop` sets when the driver is told to stop."""
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    class Trainer(TorchTrainer):
        def _register_sigint_handler(self, controller) -> None:
            """Ray Train's Ctrl-C handler aborts the workers without a checkpoint; the driver's
            SIGINT is `preempt.DriverStop`'s, which has every rank checkpoint first."""

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
    driver = {"stop_key": stop_key, "lease_owner": lease.me["owner"] if lease else None,
              "took_over": bool(lease and lease.took_over)}
    loop_config = {"job": cfg.to_dict(redact=False), "paths": paths.to_dict(), "local": local, "driver": driver}
    return Trainer(
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


class Stopped(Exception):
    """The driver was told to stop (SIGTERM/SIGINT) and every rank checkpointed; the message
    says where and how to resume, `exit_code` is 128 + the signal's number."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


def run(cfg: JobConfig, *, paths: RunPaths | None = None, local: bool = False, allow_changes: bool = False,
        resume_hint: str = ""):
    """Run (or resume: same name + storage_path) a training job; return Ray's `Result`.

    `paths`: the run's, from `paths.for_job(cfg)` where the caller loaded the job (then `cfg`
    is that call's absolutized job); built here when not given. Raises `Stopped` when a
    SIGTERM/SIGINT stopped it (`resume_hint`: the command to name).
    """
    from vlv_ray.data.pipeline import job_blocks, one_batch_per_worker, shard_paths
    from vlv_ray.data.shards import DataError
    from vlv_ray.train import precheck, preempt

    if paths is None:
        cfg, paths = for_job(cfg)
    # Fail on bad input before paying for a cluster start.
    rows = sum(b.rows for b in job_blocks(cfg.data.uri, shard_paths(cfg.data.uri, **paths.storage)[2],
                                          cfg.data.max_images))
    if not local and (need := one_batch_per_worker(cfg, rows)):  # --local runs one worker
        key, what = ("data.max_images", "got") if cfg.data.max_images else ("data.uri", f"{cfg.data.uri} lists")
        raise DataError(f"{key}: {what} {rows} images, {need}; lower data.batch_size or use fewer workers")
    precheck.stage1_export(cfg, paths)
    stop, lease = preempt.DriverStop(), None
    # From here a SIGTERM/SIGINT ends the run with one line and the lease released; once the
    # workers run, every rank checkpoints first (preempt.DriverStop).
    with stop:
        try:
            # Local mode (--local) is for debugging and leaves storage alone: no lease, nothing written.
            with stop.deferred():  # the lease taken whole, so that the finally below releases it
                lease = None if local else precheck.take_lease(cfg, paths)
            # A run taken over from a driver that may only hang: leave its incomplete checkpoints alone.
            precheck.resume_settings(cfg, paths, allow_changes=allow_changes, clean=not (lease and lease.took_over))
            quiet.apply_to_this_process(cfg.scaling.use_gpu)
            # A signal waits for Ray's calls to return (preempt.DriverStop.deferred): a half-started
            # local cluster is not ours to leave behind.
            with stop.deferred():
                ensure_ray()  # a RAY_ADDRESS where nothing answers: one line, in seconds (cluster_address)
                stop.claim()
                if not local:  # the wait for room ends at a signal, between its one-second slices
                    precheck.placeable(cfg, worker_resources(cfg), poll=stop.check)
            result = _fit(cfg, paths, stop, lease, local, resume_hint)
            stop.stage = "after its last checkpoint, before the export was written"
            _after(cfg, paths, result, local)
        finally:
            if lease is not None:
                lease.release()
    return result


def _fit(cfg: JobConfig, paths: RunPaths, stop, lease, local: bool, resume_hint: str):
    import ray.train

    from vlv_ray.cost.tracker import track

    # Ray's own record of reported checkpoints would name ones that vlv-ray pruned or found
    # damaged, and Ray refuses to start over a missing one; resume reads storage (checkpoint.find).
    storage.delete(storage.join(paths.run, "checkpoint_manager_snapshot.json"), **paths.storage)
    # The driver meters the cluster's nodes while the run lives (vlv_ray/cost/tracker.py);
    # a --local debugging run writes no ledger.
    metered = contextlib.nullcontext() if local else track(cfg, paths)
    try:
        with contextlib.ExitStack() as running:
            with stop.deferred():  # the tracker's actor and the trainer, whole or not at all
                running.enter_context(metered)
                trainer = build_trainer(cfg, paths, local=local, lease=lease, stop_key=None if local else stop.key)
            stop.armed = not local  # from here a signal has every rank checkpoint, then end
            try:
                result = trainer.fit()
            finally:
                stop.armed = False
    except ray.train.TrainingFailedError as e:
        from vlv_ray.train.failure import TrainingFailed, describe

        raise TrainingFailed(describe(e, paths)) from None
    if stop.signum is not None and result.error is None:
        raise Stopped(_stopped_line(cfg, result, stop, resume_hint), stop.exit_code)
    if lease is not None and lease.lost:
        raise StorageError(f"{paths.run}: another driver took over the run ({lease.lost}); "
                           "this one exported nothing")
    return result


def _stopped_line(cfg: JobConfig, result, stop, resume_hint: str) -> str:
    import signal

    step = (result.metrics or {}).get("step")
    where = f"at step {step}, checkpoint {result.checkpoint.path}" if result.checkpoint else "before its first step"
    again = resume_hint or f"vlv-ray train JOB name={cfg.name} storage_path={cfg.storage_path}"
    return f"stopped by {signal.Signals(stop.signum).name} {where}; resume with the same command: {again}"


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
