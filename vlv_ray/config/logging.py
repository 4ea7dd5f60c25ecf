"""`logging:` in a job: the log line and wandb, and the evaluations run during training.

Most of its keys are evaluation's (`during.py`, the training stages' samples); the wandb keys
share the section because a job has always spelled them `logging.*`. Part of the job schema
(`vlv_ray.config.JobConfig.logging`), read by vlv_ray/eval and vlv_ray/train/metrics.py; it
imports nothing of the project but `vlv_ray.typed`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from vlv_ray.typed import ConfigError, _range


@dataclass
class LoggingConfig:
    every_steps: int = field(default=10, metadata=_range(1))
    wandb: Literal["offline", "online", "disabled"] = "offline"
    wandb_project: str = "vlv-ray"
    wandb_dir: str = "wandb"  # local dir for wandb's files (offline runs: `wandb sync` it later)
    # Every N steps (0: never): reconstructions (stage 1) or captions (stage 2) of a few
    # training images, to wandb and to <storage_path>/<name>/eval/.
    eval_every_steps: int = field(default=0, metadata=_range(0))
    eval_images: int = field(default=4, metadata=_range(1))
    eval_sample_steps: int = field(default=20, metadata=_range(1))  # diffusion steps per reconstruction
    eval_guidance: float = 2.0  # CFG scale (the paper reports CFG 2)
    # Stage 1 measured by images seen (the paper's Table 5 in one run): each time the images
    # seen pass one of these points (e.g. [6000000, 18000000, 40000000]), reconstruction FID on
    # the first `eval_fid_images` images of `eval_data` (a prepared held-out set, the same images
    # every time), with `eval_sample_steps` and `eval_guidance`; one line per point in
    # <run>/eval.jsonl and wandb (vlv_ray/eval/during.py).
    eval_every_images: list[int] = field(default_factory=list)
    eval_data: str | None = None
    eval_fid_images: int = field(default=1000, metadata=_range(2))
    eval_features: str = "inception"  # or package.module:attribute (vlv_ray/eval/features.py)

    def validate(self, stage: int) -> "LoggingConfig":
        """What the keys need of each other and of the job's stage (`JobConfig.validate` calls it)."""
        if self.eval_every_images and (stage != 1 or not self.eval_data):
            raise ConfigError("logging.eval_every_images: needs stage 1 and logging.eval_data (a prepared held-out "
                              "set)" if stage == 1 else "logging.eval_every_images: stage 1 only (reconstruction FID)")
        if any(n < 1 for n in self.eval_every_images):
            raise ConfigError(f"logging.eval_every_images: got {self.eval_every_images}, expected image counts ≥ 1")
        return self
