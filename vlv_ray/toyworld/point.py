"""One point of the method in the miniature world, the unit both `vlv-ray demo` and
`vlv-ray sweep` are built from:

world data for N images (a fraction of them captioned) → stage 1 on the images only
(Ray Train + DeepSpeed) → stage 2 on the captioned ones → captions for held-out images and
their attribute accuracy; reconstructions of the same images, their attribute accuracy and
their FID in miniature (the reader's features, through `vlv-ray eval`'s FID code) →
worker-hours and dollars.

The demo runs one point and adds its comparisons; a sweep runs one per Ray Tune trial.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from vlv_ray.paths import PACKAGED_JOBS
from vlv_ray.toyworld import evaluate, world
from vlv_ray.toyworld.assets import TEACHER_DIR

WORLD_SEED = 7  # the training images; the held-out images use reader.HELD_OUT_SEED

Say = Callable[[str], None]


def demo_say(msg: str) -> None:
    print(f"[demo] {msg}", flush=True)


def paired_count(images: int, fraction: float) -> int:
    """How many of `images` get captions for stage 2 (at least one)."""
    return max(1, int(images * fraction))


def data_dirs(work: Path) -> tuple[Path, Path]:
    """Where a point's stage-1 (images only) and stage-2 (captioned) shards go under `work`."""
    return work / "data" / "stage1", work / "data" / "stage2"


def write_world(work: Path, images: int, paired: int) -> tuple[Path, Path]:
    """Shards of `images` world images without captions (stage 1) and of the first `paired` of
    the same images with captions (stage 2) under `work/data/`; kept if already written."""
    data1, data2 = data_dirs(work)
    if not (data1 / "manifest.json").is_file():
        world.write_dataset(str(data1), work / "images" / "stage1", WORLD_SEED, images, captions=False)
    if not (data2 / "manifest.json").is_file():
        world.write_dataset(str(data2), work / "images" / "stage2", WORLD_SEED, paired, captions=True)
    return data1, data2


def train_job(job: str | Path, overrides: list[str], say: Say = demo_say) -> tuple[dict, float]:
    """Run a job through the real launcher; (its last metrics + workers and queries, wall seconds)."""
    from vlv_ray.config import load_job
    from vlv_ray.train import launch

    cfg = load_job(job, overrides)
    say(f"{cfg.name}: stage {cfg.stage}, {cfg.max_steps} steps × {cfg.global_batch_size} images, "
        f"{cfg.scaling.num_workers} Ray Train workers, DeepSpeed ZeRO-{cfg.deepspeed.zero_stage}")
    t0 = time.time()
    result = launch.run(cfg)
    if result.error:
        raise RuntimeError(f"{cfg.name} failed: {result.error}")
    return {**(result.metrics or {}), "workers": cfg.scaling.num_workers,
            "queries": cfg.model.num_queries}, time.time() - t0


def runs_dir(work: Path) -> Path:
    return work / "runs"


def common_overrides(work: Path) -> list[str]:
    """What every run of a point shares: where runs go and the committed teacher."""
    return [f"storage_path={runs_dir(work)}", f"model.stable_diffusion={TEACHER_DIR}"]


def runs_cost(runs: list[tuple[dict, float]]) -> dict[str, float]:
    """Worker-hours (workers × wall time) and the runs' own ledgers' dollars, summed."""
    worker_s = sum(m["workers"] * seconds for m, seconds in runs)
    return {"worker_hours": round(worker_s / 3600, 4), "usd": round(sum(m.get("cost_usd", 0.0) for m, _ in runs), 4)}


@dataclass
class Stages:
    """The two job files of a point and the overrides each gets (beyond data, names, storage)."""

    stage1_job: Path = PACKAGED_JOBS / "toy-stage1.yaml"
    stage2_job: Path = PACKAGED_JOBS / "toy-stage2.yaml"
    stage1_overrides: list[str] = field(default_factory=list)
    stage2_overrides: list[str] = field(default_factory=list)

    def check_counts(self, images: int, paired: int | None) -> None:
        """Each stage must fill one batch per worker from its images, or its first epoch ends before
        its first step: a ValueError naming `images`, before anything is written. `paired` None:
        stage 1 only."""
        from vlv_ray.config import load_job
        from vlv_ray.data.pipeline import one_batch_per_worker

        for n, job, overrides, what in ((images, self.stage1_job, self.stage1_overrides, "stage 1 trains on"),
                                        (paired, self.stage2_job, self.stage2_overrides, "stage 2 trains on")):
            if n is not None and (need := one_batch_per_worker(load_job(job, overrides), n)):
                raise ValueError(f"images: got {images}, too few: {what} {n} of them, {need}")

    def with_queries(self, queries: int | None) -> "Stages":
        """Both stages at `queries` caption-embedding positions (stage 2 takes the export's anyway)."""
        if queries is None:
            return self
        q = [f"model.num_queries={queries}"]
        return Stages(self.stage1_job, self.stage2_job, [*self.stage1_overrides, *q], [*self.stage2_overrides, *q])


@dataclass
class PointResult:
    metrics: dict  # what a report shows: accuracy, losses, seconds, cost, sizes
    captions: list[str]  # the held-out captions, in order
    reconstructions: np.ndarray  # the held-out images reconstructed from stage 1's caption embeddings
    stage1_export: Path
    stage2_run: Path
    stage1: tuple[dict, float]  # (its metrics, wall seconds), for a caller adding runs to the cost
    stage2: tuple[dict, float]


def run_stage1(work: Path, data1: Path, tag: str, stages: Stages, say: Say = demo_say) -> tuple[dict, float, Path]:
    """Stage 1 on `data1`; (its metrics, wall seconds, its export)."""
    name = f"toy-stage1-{tag}"
    metrics, seconds = train_job(stages.stage1_job, [f"name={name}", f"data.uri={data1}", *common_overrides(work),
                                                 *stages.stage1_overrides], say)
    return metrics, seconds, runs_dir(work) / name / "export" / "stage1"


def run_stage2(work: Path, stage1_export: str | Path, name: str, stages: Stages, *extra: str,
               say: Say = demo_say) -> tuple[dict, float]:
    """Stage 2 named `name` on the point's captioned shards, from `stage1_export` (`extra`
    overrides last); (its metrics, wall seconds)."""
    return train_job(stages.stage2_job, [f"name={name}", f"data.uri={data_dirs(work)[1]}", *common_overrides(work),
                                         f"model.stage1={stage1_export}", *stages.stage2_overrides, *extra], say)


def point(work: str | Path, *, images: int, paired_fraction: float = 0.1, held_out: int = 500,
          stages: Stages | None = None, tag: str, say: Say = demo_say) -> PointResult:
    """World → stage 1 → stage 2 → held-out caption accuracy → cost, all under `work`.
    Run names end in `tag`; `work/captions.jsonl` gets the held-out captions beside the truth."""
    stages = stages or Stages()
    t_start, work = time.time(), Path(work).resolve()
    paired = paired_count(images, paired_fraction)
    seconds: dict[str, float] = {}

    t0 = time.time()
    data1, data2 = write_world(work, images, paired)
    seconds["world_s"] = time.time() - t0
    say(f"world: {images} images (no captions) → {data1}; {paired} of them with captions "
        f"({paired / images:.0%}) → {data2} ({seconds['world_s']:.0f}s)")

    s1, seconds["stage1_s"], export1 = run_stage1(work, data1, tag, stages, say)
    s2_name = f"toy-stage2-{tag}"
    s2, seconds["stage2_s"] = run_stage2(work, export1, s2_name, stages, say=say)

    t0 = time.time()
    x, truth = evaluate.held_out(held_out)
    say(f"captioning {held_out} held-out images (world seed {evaluate.attribute_reader.HELD_OUT_SEED})")
    accuracy, captions = evaluate.caption_accuracy(str(runs_dir(work) / s2_name), x, truth)
    (work / "captions.jsonl").write_text("".join(
        json.dumps({"index": i, "caption": c, "truth": world.caption_of(t)}) + "\n"
        for i, (c, t) in enumerate(zip(captions, truth))))
    say(f"reconstructing the {held_out} held-out images from their stage-1 caption embeddings")
    recon = evaluate.reconstructions(str(export1), x)
    recon_accuracy, recon_fid = evaluate.read_accuracy(recon, truth), evaluate.fid_in_miniature(x, recon)
    seconds["evaluate_s"] = time.time() - t0
    seconds["total_s"] = time.time() - t_start

    metrics = {
        "images": images, "queries": s1["queries"], "paired_images": paired, "held_out_images": held_out,
        "caption_accuracy": accuracy,
        "reconstruction_accuracy": recon_accuracy, "reconstruction_fid": recon_fid,
        "stage1_final_loss": s1.get("loss"), "stage2_final_loss": s2.get("loss"),
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
        "cost": runs_cost([(s1, seconds["stage1_s"]), (s2, seconds["stage2_s"])]),
    }
    return PointResult(metrics, captions, recon, export1, runs_dir(work) / s2_name, (s1, seconds["stage1_s"]),
                       (s2, seconds["stage2_s"]))
