"""What the driver checks before it spends money: each failure is one line naming the key.

In order of cost: the stage-1 export a stage-2 job starts from; the run directory is
writable and no other driver holds it (the lease, which is itself the write probe); a
resumed checkpoint was written under the same settings; and, once Ray is up, the cluster
can place every worker within `scaling.placement_timeout_s`. Without the last check Ray
Train waits for resources forever, whatever `checkpoint.max_failures` says.
"""
from __future__ import annotations

import time
from typing import Callable

from vlv_ray import storage
from vlv_ray.config import ConfigError, JobConfig
from vlv_ray.paths import RunPaths
from vlv_ray.storage import StorageError


def stage1_export(cfg: JobConfig, paths: RunPaths) -> None:
    """Stage 2 builds its encoder from `model.stage1`: it must be a stage-1 export."""
    if cfg.stage != 2:
        return
    from vlv_ray.models import export

    try:
        uri = export.resolve(cfg.model.stage1, **paths.storage)
        meta = storage.read_json(storage.join(uri, export.META_FILE), **paths.storage)
    except export.ExportError as e:
        raise ConfigError(f"model.stage1: {e}") from None
    except storage.NotJSON:
        raise ConfigError(f"model.stage1: {uri}/{export.META_FILE} is not valid JSON") from None
    if meta.get("kind") != "vlv-stage1":
        raise ConfigError(f"model.stage1: {uri} is a {meta.get('kind')!r} export, expected a stage-1 export")
    if meta.get("resolution") != cfg.data.resolution:
        raise ConfigError(f"data.resolution: got {cfg.data.resolution}, but the stage-1 export {uri} "
                          f"was trained at {meta.get('resolution')}")


def take_lease(cfg: JobConfig, paths: RunPaths, say=print):
    """Hold the run; a storage_path that cannot be written is one line, not a traceback."""
    from vlv_ray.train.lease import Lease

    run = paths.run
    lease = Lease(run, cfg.checkpoint.lease_timeout_s, **paths.storage)
    try:
        return lease.acquire(say=say)
    except (PermissionError, NotADirectoryError, FileExistsError, IsADirectoryError) as e:
        raise StorageError(f"storage_path={cfg.storage_path}: cannot write the run directory {run} "
                           f"({e.strerror or type(e).__name__}); expected a writable directory or bucket") from None
    except OSError as e:
        first = storage.redact(str(e)).splitlines()[0] if str(e) else type(e).__name__
        raise StorageError(f"storage_path={cfg.storage_path}: cannot write the run directory {run} ({first})") from None


def resume_settings(cfg: JobConfig, paths: RunPaths, *, allow_changes: bool, clean: bool = True, say=print) -> None:
    """Compare the checkpoint a resume will start from with this job's settings. Without
    `clean` (a run just taken over from a driver that may only hang), incomplete checkpoints
    newer than it are skipped and left in place: that driver could still be writing them."""
    from vlv_ray.train import checkpoint

    found = checkpoint.newest_verified(paths, clean=clean, say=say)
    if found is None:
        return
    uri, state = found
    changes = checkpoint.check_settings(cfg, state, uri, allow_changes=allow_changes)
    if changes:
        where = checkpoint.record_history(paths, {"time": time.time(), "event": "resumed with changed settings",
                                                "step": state.get("step"), "changes": changes})
        say(f"[vlv-ray] resuming step {state.get('step')} with changed settings "
            f"({', '.join(changes)}); recorded in {where}", flush=True)


def placeable(cfg: JobConfig, resources: dict[str, float], poll: Callable[[], None] = lambda: None) -> None:
    """Every worker's bundle placed within the timeout, or one line saying what the cluster has;
    a line says what the driver waits for when it is not at once. `poll()` runs between the
    waits' one-second slices (the driver's stop check raises there)."""
    import ray
    from ray.util.placement_group import placement_group, remove_placement_group

    n, timeout = cfg.scaling.num_workers, cfg.scaling.placement_timeout_s
    pg = placement_group([dict(resources)] * n, strategy="PACK")
    start, said = time.monotonic(), False
    try:
        # In slices of a second: a signal (the driver told to stop) is acted on between them.
        while not (ready := pg.wait(timeout_seconds=1.0)) and time.monotonic() - start < timeout:
            poll()
            if not said and time.monotonic() - start > 5.0:
                want = ", ".join(f"{k} {v:g}" for k, v in resources.items())
                print(f"[vlv-ray] waiting up to {timeout:g} s (scaling.placement_timeout_s) for room for {n} "
                      f"workers × ({want})", flush=True)
                said = True
    finally:
        remove_placement_group(pg)
    if not ready:
        have = ray.cluster_resources()
        has = ", ".join(f"{k} {have.get(k, 0):g}" for k in resources)
        want = ", ".join(f"{k} {v:g}" for k, v in resources.items())
        raise ConfigError(f"scaling.num_workers: {n} workers × ({want}) could not be placed within "
                          f"scaling.placement_timeout_s={timeout:g}s; the cluster has {has} in all "
                          f"(lower scaling.num_workers or cpus_per_worker, or add nodes)")
