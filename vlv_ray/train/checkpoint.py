"""Checkpoints: DeepSpeed engine state of every rank + the trainer state, via Ray Train.

Every rank writes its own ZeRO shard into a local staging dir and reports it; Ray Train
merges all ranks' files into one directory under the run in storage. `report` is a
barrier, so once it returns every rank's files are uploaded; rank 0 then writes the
`_COMPLETE` marker. Layout of one checkpoint:

    <storage_path>/<name>/step-00000004/
      trainer_state.json            step, epoch, cost ledger, config hash, world size
      _COMPLETE                     written last: the checkpoint is whole
      latest                        DeepSpeed's tag pointer ("engine")
      engine/mp_rank_00_model_states.pt                    module weights (rank 0)
      engine/zero_pp_rank_<r>_mp_rank_00_optim_states.pt   optimizer shard of rank r

Resume takes the newest of (a) the checkpoint Ray Train registered and (b) the newest
`_COMPLETE` directory in storage. (b) matters: Ray 2.60 registers a reported checkpoint
only when its controller next polls the workers, so a worker that dies right after
`report()` leaves a complete checkpoint on storage that Ray does not hand back.
"""
from __future__ import annotations

import contextlib
import json
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

import pyarrow.fs as pafs

from vlv_ray import storage
from vlv_ray.config import JobConfig

TAG = "engine"
STATE_FILE = "trainer_state.json"
COMPLETE = "_COMPLETE"
DIR_RE = re.compile(r"^step-(\d{8})$")


def dir_name(step: int) -> str:
    return f"step-{step:08d}"


def run_uri(cfg: JobConfig) -> str:
    return storage.join(cfg.storage_path, cfg.name)


def _kw(cfg: JobConfig) -> dict[str, Any]:
    return cfg.storage.options


def save(engine, state: dict[str, Any], metrics: dict[str, Any], rank: int, cfg: JobConfig) -> None:
    """Collective: every rank must call it at the same step."""
    import ray.train

    staging = Path(tempfile.mkdtemp(prefix="vlv-ckpt-"))
    name = dir_name(state["step"])
    try:
        engine.save_checkpoint(str(staging), tag=TAG)
        if rank == 0:
            (staging / STATE_FILE).write_text(json.dumps(state, indent=1, sort_keys=True))
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(str(staging)),
                         checkpoint_dir_name=name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if rank == 0:
        storage.write_json_atomic(storage.join(run_uri(cfg), name, COMPLETE), {"step": state["step"]}, **_kw(cfg))


def latest_complete(cfg: JobConfig) -> tuple[int, str] | None:
    """(step, uri) of the newest checkpoint directory carrying the `_COMPLETE` marker."""
    fs, root = storage.resolve(run_uri(cfg), **_kw(cfg))
    if fs.get_file_info(root).type != pafs.FileType.Directory:
        return None
    steps = sorted((int(m.group(1)), Path(i.path).name) for i in fs.get_file_info(pafs.FileSelector(root))
                   if i.type == pafs.FileType.Directory and (m := DIR_RE.match(Path(i.path).name)))
    for step, name in reversed(steps):
        if storage.exists(storage.join(run_uri(cfg), name, COMPLETE), **_kw(cfg)):
            return step, storage.join(run_uri(cfg), name)
    return None


def _checkpoint_step(ckpt) -> int:
    m = DIR_RE.match(Path(ckpt.path).name)
    return int(m.group(1)) if m else -1


def find(cfg: JobConfig) -> tuple[Any, dict[str, Any]]:
    """(checkpoint, trainer state) of the newest complete checkpoint, or (None, {})."""
    import ray.train

    ckpt = ray.train.get_checkpoint()
    found = latest_complete(cfg)
    if found is not None and (ckpt is None or found[0] > _checkpoint_step(ckpt)):
        fs, path = storage.resolve(found[1], **_kw(cfg))
        ckpt = ray.train.Checkpoint(path, filesystem=fs)
    if ckpt is None:
        return None, {}
    # Read only the small state file: `as_directory()` would download every rank's
    # optimizer shards here, and `restore` downloads them once more.
    def read_state() -> bytes:
        with ckpt.filesystem.open_input_stream(f"{ckpt.path}/{STATE_FILE}") as f:
            return f.read()
    try:
        return ckpt, json.loads(storage.retry_reads(read_state, f"{ckpt.path}/{STATE_FILE}"))
    except FileNotFoundError:
        raise RuntimeError(f"{ckpt.path}: checkpoint has no {STATE_FILE}; it was not written by vlv-ray") from None


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


def export_trainable(ckpt, cfg: JobConfig, state: dict[str, Any] | None = None) -> str:
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
    return export.save(storage.join(run_uri(cfg), "export", f"stage{cfg.stage}"), sd, meta, **_kw(cfg))
