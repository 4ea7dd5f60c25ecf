"""Sweep files (`vlv-ray sweep`): the miniature world's grid (images × queries) and sweeps of real
jobs (`kind: jobs`), validated the same strict way as a job."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from vlv_ray.config.job import load_yaml
from vlv_ray.typed import ConfigError, _range, build as _build


@dataclass
class SweepStageConfig:
    """One stage of every sweep point: a job file and the overrides it gets."""

    job: str = ""  # relative paths: beside the sweep file, else the packaged jobs/
    overrides: list[str] = field(default_factory=list)  # key=value, as on `vlv-ray train`


@dataclass
class SweepTrialConfig:
    """What one Ray Tune trial (one point) reserves, and how many run side by side."""

    max_concurrent: int = field(default=1, metadata=_range(1))  # a laptop: 1; a cluster: as many as fit
    # The trial only drives its runs; its Ray Train workers reserve their own CPUs/GPUs, so a
    # trial holding a whole CPU would keep them from being placed on a small machine. Not 0:
    # Tune cannot place a trial that asks for nothing.
    cpus: float = field(default=0.01, metadata=_range(0.0, lo_open=True))


@dataclass
class SweepConfig:
    """`vlv-ray sweep`: the data-volume experiment (the paper's Table 5), and the query-count
    ablation, as a grid of images × queries; each point runs stage 1 then stage 2."""

    name: str = "sweep"
    stage1: SweepStageConfig = field(default_factory=SweepStageConfig)
    stage2: SweepStageConfig = field(default_factory=SweepStageConfig)
    paired_fraction: float = field(default=0.1, metadata=_range(0.0, 0.1, lo_open=True))  # the paper: ≤10% captioned
    held_out: int = field(default=500, metadata=_range(1))  # images captioned for the accuracy
    images: list[int] = field(default_factory=lambda: [1000, 3000, 6000])  # stage-1 images per point
    queries: list[int] = field(default_factory=lambda: [16])  # model.num_queries per point
    trial: SweepTrialConfig = field(default_factory=SweepTrialConfig)

    def validate(self) -> "SweepConfig":
        for key in ("stage1", "stage2"):
            if not getattr(self, key).job:
                raise ConfigError(f"{key}.job: required (a job file, e.g. toy-{key}.yaml)")
        for key in ("images", "queries"):
            _check_counts(key, getattr(self, key))
        return self


def _check_counts(key: str, counts: list[int]) -> None:
    """A sweep's list of counts: at least one, each ≥ 1, none twice."""
    if not counts:
        raise ConfigError(f"{key}: got [], expected at least one count")
    for i, n in enumerate(counts):
        if n < 1:
            raise ConfigError(f"{key}[{i}]: got {n}, expected a count ≥ 1")
    if len(set(counts)) != len(counts):
        raise ConfigError(f"{key}: got {counts}, expected each count once")


@dataclass
class JobsSweepStageConfig(SweepStageConfig):
    """A stage of a real-job sweep: its job file, overrides, and the throughput its cost
    estimate assumes (as `vlv-ray cost estimate --throughput`; None: benchmarks/results.json)."""

    throughput: float | None = field(default=None, metadata=_range(0.0, lo_open=True))  # samples/s per GPU


@dataclass
class SweepEvalConfig:
    """How every point is measured: `vlv-ray eval recon` (and `eval caption` after stage 2)."""

    data: str = ""  # a prepared held-out set (manifest.json + shards), any storage URI
    images: int = field(default=1000, metadata=_range(2))  # its first N images, the same every point
    guidance: list[float] = field(default_factory=lambda: [2.0])  # CFG scales, one FID each (the paper: 2)
    steps: int = field(default=50, metadata=_range(1))  # sampling steps
    seed: int = 0
    features: str = "inception"  # or package.module:attribute (vlv_ray/eval/features.py)
    clip: str | None = None  # a CLIP model directory or hub id for CLIP scores; None: none
    t2i: str | None = None  # stage 2: a diffusers text-to-image pipeline for the Table-1 FID
    batch_size: int = field(default=16, metadata=_range(1))


@dataclass
class JobsSweepConfig:
    """`vlv-ray sweep` on real jobs (`kind: jobs`, vlv_ray/sweep): the paper's Table 5 on a
    prepared dataset. `mode: subsets`: one stage-1 run per image count on the first N images
    of the manifest (`data.max_images`), each measured by `eval recon` (and stage 2 + `eval
    caption` when `stage2.job` is set); `mode: images_seen`: one stage-1 run measured at each
    image count by `logging.eval_every_images`, its `eval.jsonl` lines the points."""

    name: str = "sweep"
    mode: Literal["subsets", "images_seen"] = "subsets"
    stage1: JobsSweepStageConfig = field(default_factory=JobsSweepStageConfig)
    stage2: JobsSweepStageConfig = field(default_factory=JobsSweepStageConfig)  # job "": no stage 2
    images: list[int] = field(default_factory=list)  # image counts, one point each
    # subsets: each point trains ceil(epochs × N / global batch) steps; None: the job's max_steps
    # (fixed compute, more or fewer distinct images). images_seen: the run's steps reach max(images).
    epochs: float | None = field(default=1.0, metadata=_range(0.0, lo_open=True))
    eval: SweepEvalConfig = field(default_factory=SweepEvalConfig)

    def validate(self) -> "JobsSweepConfig":
        if not self.stage1.job:
            raise ConfigError("stage1.job: required (a stage-1 job file, e.g. stage1-paper.yaml)")
        _check_counts("images", self.images)
        if not self.eval.data:
            raise ConfigError("eval.data: required (a prepared held-out set: `vlv-ray data prepare`)")
        if not self.eval.guidance or any(g <= 0 for g in self.eval.guidance):
            raise ConfigError(f"eval.guidance: got {self.eval.guidance}, expected scales > 0, e.g. [2.0]")
        if self.mode == "images_seen" and self.stage2.job:
            raise ConfigError("stage2.job: mode images_seen measures one stage-1 run; use mode subsets for stage 2")
        if self.stage2.job and not (self.eval.clip or self.eval.t2i):
            raise ConfigError("eval.clip: stage 2's caption metrics need a CLIP model (eval.clip) or a text-to-image "
                              "pipeline (eval.t2i)")
        if self.mode == "images_seen" and self.eval.clip:
            raise ConfigError("eval.clip: mode images_seen reads the run's eval.jsonl (reconstruction FID only)")
        return self


SWEEP_KINDS = ("toy", "jobs")


def load_sweep(path: str | Path, *, images: list[int] | None = None,
               queries: list[int] | None = None) -> SweepConfig | JobsSweepConfig:
    """Load and validate a sweep file; `images`/`queries` (the command line's) replace its lists.
    `kind: jobs` is a real-job sweep (JobsSweepConfig); no kind (or `toy`), the miniature world's."""
    data = load_yaml(path)
    kind = data.pop("kind", "toy")
    if kind not in SWEEP_KINDS:
        raise ConfigError(f"{path}: kind: got {kind!r}, expected one of {', '.join(map(repr, SWEEP_KINDS))}")
    if kind == "jobs" and queries is not None:
        raise ConfigError(f"{path}: queries: a sweep of real jobs varies images only (put model.num_queries in "
                          "stage1.overrides)")
    data.update({k: v for k, v in (("images", images), ("queries", queries)) if v is not None})
    try:
        return _build(JobsSweepConfig if kind == "jobs" else SweepConfig, data, "").validate()
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
