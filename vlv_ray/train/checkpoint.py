"""Checkpoints: DeepSpeed engine state of every rank + the trainer state, via Ray Train.

Every rank writes its own ZeRO shard into a local staging dir and reports it; Ray Train
merges all ranks' files into one `checkpoint_<step>` directory under the run in storage
and registers it only once every rank has uploaded, so resume sees complete
checkpoints only. Layout of one checkpoint:

    step-00000004/
      trainer_state.json            step, epoch, cost ledger, config hash, world size
      latest                        DeepSpeed's tag pointer ("engine")
      engine/mp_rank_00_model_states.pt            module weights (rank 0)
      engine/zero_pp_rank_<r>_mp_rank_00_optim_states.pt   optimizer shard of rank r
"""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

TAG = "engine"
STATE_FILE = "trainer_state.json"


def save(engine, state: dict[str, Any], metrics: dict[str, Any], rank: int) -> None:
    """Collective: every rank must call it at the same step."""
    import ray.train

    staging = Path(tempfile.mkdtemp(prefix="vlv-ckpt-"))
    try:
        engine.save_checkpoint(str(staging), tag=TAG)
        if rank == 0:
            (staging / STATE_FILE).write_text(json.dumps(state, indent=1, sort_keys=True))
        ray.train.report(
            metrics,
            checkpoint=ray.train.Checkpoint.from_directory(str(staging)),
            checkpoint_dir_name=f"step-{state['step']:08d}",
        )
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def restore(engine) -> dict[str, Any]:
    """Load Ray Train's latest complete checkpoint into `engine`; return the trainer state."""
    import ray.train

    ckpt = ray.train.get_checkpoint()
    if ckpt is None:
        return {}
    with ckpt.as_directory() as d:
        state_path = Path(d) / STATE_FILE
        if not state_path.is_file():
            raise RuntimeError(f"{ckpt.path}: checkpoint has no {STATE_FILE}; it was not written by vlv-ray")
        state = json.loads(state_path.read_text())
        loaded, _ = engine.load_checkpoint(d, tag=TAG, load_module_strict=True,
                                           load_optimizer_states=True, load_lr_scheduler_states=False)
        if loaded is None:
            raise RuntimeError(f"{ckpt.path}: no DeepSpeed engine state under tag '{TAG}'")
    return state
