"""What a checkpoint records besides the engine: where the run is, typed.

Written by rank 0 as `trainer_state.json` next to DeepSpeed's files (train/checkpoint.py)
and read back on resume. Keys this version does not know (a newer writer's) are kept
in `extra` and written back unchanged.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass
class TrainerState:
    step: int = 0  # optimizer steps done
    epoch: int = 0
    cost_usd: float = 0.0  # the dollar ledger up to this checkpoint
    config_hash: str = ""  # JobConfig.config_hash() of the run that wrote it
    world_size: int = 0  # workers that wrote it: a resume on another count converts ZeRO shards
    data: dict[str, Any] | None = None  # each rank's position in the epoch (train/batches.py)
    rejected_rows: int = 0  # rows dropped as undecodable, over the whole run
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        return {**self.extra, **d}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainerState":
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        return cls(**{k: v for k, v in d.items() if k in known},
                   extra={k: v for k, v in d.items() if k not in known})
