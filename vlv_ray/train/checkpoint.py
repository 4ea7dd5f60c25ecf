"""Checkpoints: DeepSpeed engine state of every rank + the trainer state, via Ray Train.

Every rank writes its own ZeRO shard into a local staging dir and reports it; Ray Train
uploads each rank's files into one directory under the run in storage. In Ray 2.60
`report` only agrees on the directory name before the uploads and waits for nothing
after them, so it is not a barrier: every rank then sends rank 0 the list of files it
uploaded (a collective, so it also waits for the slowest upload), rank 0 checks them in
storage and only then writes `_COMPLETE` holding that list with every file's size
(train/integrity.py). Layout of one checkpoint:

    <storage_path>/<name>/step-00000004/
      trainer_state.json            step, epoch, cost ledger, config hash + settings, world size
      _COMPLETE                     written last: {step, files: {path: bytes}}
      latest                        DeepSpeed's tag pointer ("engine")
      engine/mp_rank_00_model_states.pt                    module weights (rank 0)
      engine/zero_pp_rank_<r>_mp_rank_00_optim_states.pt   optimizer shard of rank r

Resume takes the newest checkpoint in storage that verifies (marker present, every listed
file there with its size); newer ones that do not are named in one line each and deleted,
so a save of the same step later starts from an empty directory. Ray's own registered
checkpoint is not consulted: it can name a directory whose other ranks never finished.
Pruning (`checkpoint.keep_last`) is ours for the same reason, and because Ray does not
know the checkpoints of earlier driver runs.
"""
from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

from vlv_ray import storage
from vlv_ray.config import ConfigError, JobConfig
from vlv_ray.paths import RunPaths
from vlv_ray.train import integrity, lease
from vlv_ray.train.callbacks import Callbacks
from vlv_ray.train.state import TrainerState
from vlv_ray.train.integrity import COMPLETE, DIR_RE, STATE_FILE  # noqa: F401 (the layout's names)

TAG = "engine"


def dir_name(step: int) -> str:
    return f"step-{step:08d}"


class Checkpointer:
    """When the loop checkpoints, and through what: `save` below writes the files."""

    def __init__(self, cfg: JobConfig, paths: RunPaths, rank: int, *, local: bool = False,
                 callbacks: Callbacks | None = None, lease_owner: str | None = None):
        self.cfg, self.paths, self.rank, self.local, self.callbacks = cfg, paths, rank, local, callbacks
        self.lease_owner = lease_owner  # the driver's lease; None: no lease (--local)

    def due(self, step: int, stop: bool) -> bool:
        """Every `checkpoint.every_steps`, at the last step, and whenever the run must stop now."""
        return stop or step % self.cfg.checkpoint.every_steps == 0 or step == self.cfg.max_steps

    def save(self, engine, state: TrainerState, metrics: dict[str, Any]) -> None:
        """Collective: every rank calls it at the same step."""
        import ray.train

        if self.local:  # local mode (--local) is for debugging: Ray does not persist its checkpoints
            ray.train.report(metrics)
            return
        # A driver that lost its lease (another took the run over) writes nothing more.
        lease.check_owned(self.paths.run, self.lease_owner, **self.paths.storage)
        callbacks = self.callbacks
        on_phase = (lambda phase: callbacks.checkpoint_phase(phase, state.step, self.rank)) if callbacks else None
        save(engine, state.to_dict(), metrics, self.rank, self.cfg, self.paths, on_phase=on_phase)


def save(engine, state: dict[str, Any], metrics: dict[str, Any], rank: int, cfg: JobConfig, paths: RunPaths,
         on_phase: Callable[[str], None] | None = None) -> None:
    """Collective: every rank must call it at the same step. `on_phase(name)` is called as the
    save passes "staged" (this rank's files written locally), "uploaded" (this rank's upload
    done) and "gathered" (every rank's upload confirmed, before rank 0 marks it complete)."""
    phase = on_phase or (lambda name: None)
    import ray.train
    import torch.distributed as dist

    staging = Path(tempfile.mkdtemp(prefix="vlv-ckpt-"))
    name = dir_name(state["step"])
    target = storage.join(paths.checkpoints, name)
    if rank == 0 and not storage.exists(storage.join(target, COMPLETE), **paths.storage):
        # An incomplete save of this step (a crashed one, or one left by the driver this run
        # took over): start from an empty directory. Before `report`, which no rank's upload passes
        # until every rank has entered it.
        integrity.remove(target, **paths.storage)
    try:
        engine.save_checkpoint(str(staging), tag=TAG)
        if rank == 0:
            state = {**state, "config": cfg.numerics()}  # so a resume can name what changed
            (staging / STATE_FILE).write_text(json.dumps(state, indent=1, sort_keys=True))
        files = integrity.staged_files(staging)
        phase("staged")
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(str(staging)),
                         checkpoint_dir_name=name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    phase("uploaded")
    # This rank's upload is done; the gather returns once every rank's is.
    everyone: list[dict[str, int]] = [files]
    if dist.is_initialized() and dist.get_world_size() > 1:
        everyone = [{} for _ in range(dist.get_world_size())]
        dist.all_gather_object(everyone, files)
    phase("gathered")
    if rank == 0:
        merged = {k: v for f in everyone for k, v in f.items()}
        uri = storage.join(paths.checkpoints, name)
        integrity.write_marker(uri, state["step"], merged, **paths.storage)
        integrity.prune(paths.checkpoints, cfg.checkpoint.keep_last, **paths.storage)


def newest_verified(paths: RunPaths, *, clean: bool = False, say=print) -> tuple[str, dict[str, Any]] | None:
    """(uri, trainer state) of the newest checkpoint that verifies, or None.

    Every newer directory is named by `say` with the reason it was skipped; with `clean`
    (the one process that owns the run: the driver, or rank 0) it is deleted, and so are
    unmarked directories left by crashed saves.
    """
    kw = paths.storage
    chosen = None
    for step, uri in integrity.step_dirs(paths.checkpoints, **kw):
        if chosen is not None:
            if clean and not storage.exists(storage.join(uri, COMPLETE), **kw):
                integrity.remove(uri, **kw)
            continue
        why = integrity.problem(uri, **kw)
        if why is None:
            try:
                chosen = uri, integrity.read_state(uri, **kw)
                continue
            except ValueError as e:
                why = f"unreadable {STATE_FILE} ({e})"
        say(f"[vlv-ray] skipping checkpoint {uri}: {why}" + ("; deleted it" if clean else "; left it in place"),
            flush=True)
        if clean:
            integrity.remove(uri, **kw)
    return chosen


def find(paths: RunPaths, *, clean: bool = True) -> tuple[Any, dict[str, Any]]:
    """(checkpoint, trainer state) of the newest checkpoint that verifies, or (None, {}).
    Rank 0 deletes newer incomplete ones when `clean` (not in a run taken over: see lease.py)."""
    import ray.train

    rank = ray.train.get_context().get_world_rank()
    found = newest_verified(paths, clean=clean and rank == 0, say=print if rank == 0 else _quiet)
    if found is None:
        return None, {}
    fs, path = storage.resolve(found[0], **paths.storage)
    return ray.train.Checkpoint(path, filesystem=fs), found[1]


def _quiet(*_, **__) -> None:
    pass


def changed_settings(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> dict[str, tuple[Any, Any]]:
    """{dotted key: (old, new)} of every setting that differs between two config dicts."""
    out: dict[str, tuple[Any, Any]] = {}
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out.update(changed_settings(a, b, f"{prefix}{k}."))
        elif a != b:
            out[f"{prefix}{k}"] = (a, b)
    return out


def check_settings(cfg: JobConfig, state: dict[str, Any], uri: str, *, allow_changes: bool) -> dict[str, Any]:
    """Refuse to resume `state` under different numerics unless `allow_changes`; return the changes."""
    if not state.get("config_hash") or state["config_hash"] == cfg.config_hash():
        return {}
    if "config" in state:
        changes = {k: list(v) for k, v in changed_settings(state["config"], cfg.numerics()).items()}
    else:  # written before checkpoints recorded their settings
        changes = {"(settings not recorded)": [state["config_hash"], cfg.config_hash()]}
    if not changes:
        return {}
    if not allow_changes:
        listed = "; ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in changes.items())
        raise ConfigError(f"{uri}: resuming with changed settings ({listed}); pass allow_changes=True to go on "
                          f"with them (recorded in the run's history.jsonl), or use another name")
    return changes


def record_history(paths: RunPaths, event: dict[str, Any]) -> str:
    """Append one JSON line to `<run>/history.jsonl` (a read-modify-write: the lease makes us the only writer)."""
    uri = paths.history
    try:
        old = storage.read_bytes(uri, **paths.storage)
    except FileNotFoundError:
        old = b""
    storage.write_bytes_atomic(uri, old + (json.dumps(event, sort_keys=True) + "\n").encode(), **paths.storage)
    return uri


@contextlib.contextmanager
def local_dir(ckpt) -> Iterator[str]:
    """`ckpt.as_directory()` (one download per node, shared by its ranks), entered again
    when the download breaks off: pyarrow's copy does not retry a body cut half-way."""
    with contextlib.ExitStack() as stack:
        yield storage.retry_reads(lambda: stack.enter_context(ckpt.as_directory()),
                                  f"downloading checkpoint {ckpt.path}")


def needs_universal(state: dict[str, Any], world: int, cfg: JobConfig) -> bool:
    """ZeRO optimizer shards are laid out for the saving world size; a resize needs conversion."""
    return bool(state) and cfg.deepspeed.zero_stage > 0 and state.get("world_size", world) != world


def restore(engine, ckpt, state: dict[str, Any], *, universal: bool) -> None:
    """Load `ckpt` into `engine` (built with `checkpoint.load_universal` when `universal`)."""
    with local_dir(ckpt) as d:
        load_dir = d
        scratch = None
        if universal:
            scratch = tempfile.mkdtemp(prefix="vlv-universal-")
            to_universal(Path(d) / TAG, Path(scratch) / TAG)
            load_dir = scratch
        try:
            loaded, _ = engine.load_checkpoint(load_dir, tag=TAG, load_module_strict=True,
                                               load_optimizer_states=True, load_lr_scheduler_states=False)
        finally:
            if scratch:
                shutil.rmtree(scratch, ignore_errors=True)
        if loaded is None:
            raise RuntimeError(f"{ckpt.path}: no DeepSpeed engine state under tag '{TAG}'")


def to_universal(src: Path, dst: Path) -> None:
    """DeepSpeed's universal checkpoint: optimizer state per parameter, any world size."""
    import argparse
    import contextlib
    import io

    from deepspeed.checkpoint import ds_to_universal

    args = argparse.Namespace(input_folder=str(src), output_folder=str(dst), num_extract_workers=1,
                              num_merge_workers=1, keep_temp_folder=False, strict=True, inject_missing_state=True)
    with contextlib.redirect_stdout(io.StringIO()):  # its progress chatter is not ours to show
        ds_to_universal.main(args)
    for f in src.glob("*model_states.pt"):
        if not (dst / f.name).exists():
            shutil.copy2(f, dst / f.name)


def export_trainable(ckpt, cfg: JobConfig, paths: RunPaths, state: dict[str, Any] | None = None) -> str:
    """Consolidate the trainable weights of every rank's shard into an export directory.

    Written to `<storage_path>/<name>/export/stage<N>/` (models/export.py); names are the
    trainable module's parameter names. Stage 2 and inference read this, not DeepSpeed files.
    """
    import torch

    with local_dir(ckpt) as d:
        # ZeRO-0/1/2 write mp_rank_00_model_states.pt; ZeRO-3 one per rank, zero_pp_rank_<r>_….
        files = sorted((Path(d) / TAG).glob("*mp_rank_00_model_states.pt"), key=lambda f: len(f.name))
        if not files:
            raise RuntimeError(f"{ckpt.path}: no DeepSpeed model states under '{TAG}/'")
        states = torch.load(files[0], map_location="cpu", weights_only=False)
        # The optimizer's parameters by name: no buffers, no tied aliases, no frozen weights.
        names = {n for group in states["param_shapes"] for n in group}
        if cfg.deepspeed.zero_stage == 0:
            sd = states["module"]
        else:
            from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

            sd = get_fp32_state_dict_from_zero_checkpoint(d, tag=TAG, exclude_frozen_parameters=True)
        sd = {k: v for k, v in sd.items() if k in names}
        missing = names - set(sd)
        if missing:
            raise RuntimeError(f"{ckpt.path}: export is missing trainable weights: {sorted(missing)[:5]}")
        state = state or json.loads((Path(d) / STATE_FILE).read_text())
    from vlv_ray.models import export

    meta = export.stage1_meta(cfg, state) if cfg.stage == 1 else export.stage2_meta(cfg, state)
    return export.save(paths.export(cfg.stage), sd, meta, **paths.storage)
