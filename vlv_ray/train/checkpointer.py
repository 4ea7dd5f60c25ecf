"""When the loop checkpoints, and through what (train/checkpoint.py writes the files)."""
from __future__ import annotations

from typing import Any

from vlv_ray.config import JobConfig
from vlv_ray.train import checkpoint, lease
from vlv_ray.train.callbacks import Callbacks
from vlv_ray.train.state import TrainerState


class Checkpointer:
    def __init__(self, cfg: JobConfig, rank: int, *, local: bool = False, callbacks: Callbacks | None = None,
                 lease_owner: str | None = None):
        self.cfg, self.rank, self.local, self.callbacks = cfg, rank, local, callbacks
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
        lease.check_owned(checkpoint.run_uri(self.cfg), self.lease_owner, **self.cfg.storage.options)
        callbacks = self.callbacks
        on_phase = (lambda phase: callbacks.checkpoint_phase(phase, state.step, self.rank)) if callbacks else None
        checkpoint.save(engine, state.to_dict(), metrics, self.rank, self.cfg, on_phase=on_phase)
