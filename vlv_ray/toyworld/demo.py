"""`vlv-ray demo`: the whole method in the miniature world, on a local Ray cluster.

One point (`point.py`): world → shards (the normal data plane) → stage 1 on images only
(2 Ray Train workers, DeepSpeed) → stage 2 on captions for 10% of those images → held-out
caption accuracy; then the same stage 2 on an encoder that skipped stage 1, reconstructions
and their attribute accuracy → `metrics.json` and a cost summary.

Every figure is reported over `seeds` seeds (mean, std, min, max and each run): stage 2 with
and without stage 1 is trained once per seed on the one stage-1 run (stage 1 is two thirds
of the demo's time; a stage-1 seed spread is a sweep's job), and the reconstructions are
sampled once per seed. One seed's figure moved by up to 38 points across machines (the
no-stage-1 baseline: 36.5% and 74.4% from one commit), so no single run is reported alone.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from vlv_ray.config import load_job
from vlv_ray.toyworld import DEMO_IMAGES, DEMO_SEEDS, DEMO_STAGE2_STEPS, evaluate, world
from vlv_ray.toyworld.assets import TEACHER_DIR, TOWER_FILE
from vlv_ray.toyworld.point import (PointResult, Stages, common_overrides, demo_say as _say, paired_count, point,
                                    runs_cost, run_stage1, run_stage2, runs_dir, write_world)

# Stage 1's vision tower (`model.florence`): the committed pretrained toy tower
# (toyworld/tower.py), as the real method starts from a pretrained Florence-2. The job file
# alone keeps the seeded random tower; `vlv-ray demo model.florence=null` runs the demo on it.
VISION_TOWER: Path | None = TOWER_FILE


def _stage2(work: Path, stage1: str, name: str, seed: int, stages: Stages, x, truth,
            timings: dict[str, float], key: str) -> tuple[tuple[dict, float], dict]:
    """One stage-2 run from the stage-1 export `stage1` at `seed`, its wall time added to
    `timings[key]` and its captioning to `timings["evaluate_s"]`; ((metrics, seconds), caption accuracy)."""
    run = run_stage2(work, stage1, name, stages, f"seed={seed}")
    timings[key] = timings.get(key, 0.0) + run[1]
    t0 = time.time()
    accuracy = evaluate.caption_accuracy(str(runs_dir(work) / name), x, truth)[0]
    timings["evaluate_s"] += time.time() - t0
    return run, accuracy


@dataclass
class _Seeds:
    """What the demo's runs gave, one entry a seed, in seed order."""
    captions: list[dict]
    stage2_losses: list
    recon: list[dict]
    fid: list[float]
    cost_runs: list[tuple[dict, float]]
    no_stage1: list[dict] = field(default_factory=list)

    def spread(self, compare: bool) -> dict:
        out = {"caption_accuracy": evaluate.spread(self.captions),
               "reconstruction_accuracy": evaluate.spread(self.recon),
               "reconstruction_fid": evaluate.spread([{"value": f} for f in self.fid])}
        if compare:
            out["caption_accuracy_no_stage1"] = evaluate.spread(self.no_stage1)
        return out


def run(workdir: str | Path = "vlv-demo", *, images: int = DEMO_IMAGES, paired_fraction: float = 0.1, held_out: int = 500,
        seeds: int = DEMO_SEEDS, stage2_steps: int | None = DEMO_STAGE2_STEPS, vision_tower: str | Path | None = VISION_TOWER,
        stage1_overrides: list[str] | None = None,
        stage2_overrides: list[str] | None = None, compare: bool = True, stage1_only: bool = False) -> dict:
    """Run the demo in `workdir`; return the metrics (also written to `workdir/metrics.json`).
    `stage1_only`: stop after the stage-1 run and its export (a quick check of an install).
    `stage2_steps`: None keeps the job file's; `stage2_overrides` come after it. `vision_tower`:
    stage 1's `model.florence` (None: the job file's); `stage1_overrides` come after it."""
    from vlv_ray import storage

    t_start = time.time()
    stages = checked_stages(images=images, paired_fraction=paired_fraction, seeds=seeds, stage2_steps=stage2_steps,
                            vision_tower=vision_tower, stage1_overrides=stage1_overrides,
                            stage2_overrides=stage2_overrides, stage1_only=stage1_only)
    work = Path(workdir).resolve()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    storage.check_writable(str(work))  # before minutes of work, not after
    if stage1_only:
        return _stage1_only(work, images, paired_fraction, stamp, stages)

    seed_list = list(range(seeds))
    stage1_cfg = load_job(stages.stage1_job, [*common_overrides(work), *stages.stage1_overrides])
    p = point(work, images=images, paired_fraction=paired_fraction, held_out=held_out, tag=stamp,
              stages=Stages(stages.stage1_job, stages.stage2_job, stages.stage1_overrides,
                            [*stages.stage2_overrides, f"seed={seed_list[0]}"]))
    timings = dict(p.metrics["seconds"])
    x, truth = evaluate.held_out(held_out)
    runs = _Seeds([p.metrics["caption_accuracy"]], [p.metrics["stage2_final_loss"]],
                  [p.metrics["reconstruction_accuracy"]], [p.metrics["reconstruction_fid"]["value"]],
                  [p.stage1, p.stage2])
    for seed in seed_list[1:]:
        _another_seed(work, p, seed, stamp, stages, x, truth, timings, runs)
    if compare:
        _without_stage1(work, p, stage1_cfg, seed_list, stamp, stages, x, truth, timings, runs)

    evaluate.pairs_grid(x, p.reconstructions, n=32).save(work / "reconstructions.png")
    timings["total_s"] = time.time() - t_start
    metrics = _metrics(work, p, runs.spread(compare), runs, stage1_cfg, seed_list, timings, compare=compare,
                       held_out=held_out, images=images, stage2_steps=stage2_steps)
    (work / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    summary(metrics, p.captions[:4], truth[:4])
    return metrics


def checked_stages(*, images: int = DEMO_IMAGES, paired_fraction: float = 0.1, seeds: int = DEMO_SEEDS,
                   stage2_steps: int | None = DEMO_STAGE2_STEPS, vision_tower: str | Path | None = VISION_TOWER,
                   stage1_overrides: list[str] | None = None, stage2_overrides: list[str] | None = None,
                   stage1_only: bool = False) -> Stages:
    """The demo's two stages with their overrides, checked against `images` and `seeds`: a
    ValueError naming the argument before anything is written (`run` calls it first)."""
    if seeds < 1:
        raise ValueError(f"seeds: got {seeds}, expected at least 1")
    s2 = [f"max_steps={stage2_steps}"] if stage2_steps is not None else []
    tower = [f"model.florence={vision_tower}"] if vision_tower else []
    stages = Stages(stage1_overrides=[*tower, *(stage1_overrides or [])],
                    stage2_overrides=[*s2, *(stage2_overrides or [])])
    stages.check_counts(images, None if stage1_only else paired_count(images, paired_fraction))
    return stages


def _stage1_only(work: Path, images: int, paired_fraction: float, stamp: str, stages: Stages) -> dict:
    """`--stage1-only`: the world, the stage-1 run and its export; their metrics."""
    t0 = time.time()
    data1, _ = write_world(work, images, paired_count(images, paired_fraction))
    world_s = time.time() - t0
    s1, stage1_s, export1 = run_stage1(work, data1, stamp, stages)
    _say(f"stage 1 done ({stage1_s:.0f}s): export {export1}")
    return {"stage1_final_loss": s1.get("loss"), "seconds": {"world_s": round(world_s, 1),
                                                             "stage1_s": round(stage1_s, 1)},
            "artefacts": {"workdir": str(work), "stage1_export": str(export1)}}


def _another_seed(work: Path, p: PointResult, seed: int, stamp: str, stages: Stages, x, truth,
                  timings: dict[str, float], runs: _Seeds) -> None:
    """Stage 2 again at `seed` on the point's stage-1 export, and the held-out images
    reconstructed again with sampling seed `seed`; added to `runs`."""
    _say(f"stage 2 again at seed {seed} on the same stage-1 export")
    r, acc = _stage2(work, str(p.stage1_export), f"toy-stage2-{stamp}-seed{seed}", seed, stages, x, truth,
                     timings, "stage2_s")
    runs.cost_runs.append(r)
    runs.captions.append(acc)
    runs.stage2_losses.append(r[0].get("loss"))
    t0 = time.time()
    _say(f"reconstructing the held-out images again, sampling seed {seed}")
    images_s = evaluate.reconstructions(str(p.stage1_export), x, seed=seed)
    runs.recon.append(evaluate.read_accuracy(images_s, truth))
    runs.fid.append(evaluate.fid_in_miniature(x, images_s, seed=seed)["value"])
    timings["evaluate_s"] += time.time() - t0


def _without_stage1(work: Path, p: PointResult, stage1_cfg, seed_list: list[int], stamp: str, stages: Stages,
                    x, truth, timings: dict[str, float], runs: _Seeds) -> None:
    """The baseline: stage 2 at every seed on stage 1's starting encoder (its seed, its vision
    tower), never trained; added to `runs.no_stage1`."""
    untrained = evaluate.untrained_stage1(runs_dir(work) / f"no-stage1-{stamp}", num_queries=p.metrics["queries"],
                                          resolution=world.SIZE, sd_path=str(TEACHER_DIR), seed=stage1_cfg.seed,
                                          florence=stage1_cfg.model.florence)
    _say(f"the same stage 2 on an encoder that skipped stage 1 ({untrained}), seeds {seed_list}")
    for seed in seed_list:
        suffix = "" if seed == seed_list[0] else f"-seed{seed}"
        r, acc = _stage2(work, untrained, f"toy-stage2-no-stage1-{stamp}{suffix}", seed, stages, x, truth,
                         timings, "stage2_no_stage1_s")
        runs.cost_runs.append(r)
        runs.no_stage1.append(acc)


def _metrics(work: Path, p: PointResult, spread: dict, runs: _Seeds, stage1_cfg, seed_list: list[int],
             timings: dict[str, float], *, compare: bool, held_out: int, images: int,
             stage2_steps: int | None) -> dict:
    """`metrics.json`: the means over seeds under the figures' keys; `spread` holds std, min,
    max and every seed's run."""
    return {
        "caption_accuracy": spread["caption_accuracy"]["mean"],
        "caption_accuracy_no_stage1": spread["caption_accuracy_no_stage1"]["mean"] if compare else None,
        "reconstruction_accuracy": spread["reconstruction_accuracy"]["mean"],
        "reconstruction_fid": {**p.metrics["reconstruction_fid"], "value": spread["reconstruction_fid"]["mean"]["value"],
                               "seed": seed_list},
        "spread": spread,
        "vision_tower": stage1_cfg.model.florence or "random (seeded)",
        "seeds": {"stage1": stage1_cfg.seed, "stage2": seed_list, "reconstruction_sampling": seed_list},
        "held_out_images": held_out, "stage1_images": images, "stage2_images": p.metrics["paired_images"],
        "stage2_steps": stage2_steps,
        "stage1_final_loss": p.metrics["stage1_final_loss"], "stage2_final_loss": runs.stage2_losses,
        "seconds": {k: round(v, 1) for k, v in timings.items()},
        "cost": runs_cost(runs.cost_runs),
        "artefacts": {"workdir": str(work), "stage1_export": str(p.stage1_export),
                      "stage2_export": str(p.stage2_run / "export" / "stage2"),
                      "captions": str(work / "captions.jsonl"), "reconstructions": str(work / "reconstructions.png"),
                      "metrics": str(work / "metrics.json"), "teacher": str(TEACHER_DIR)},
    }


def pct(s: dict | None) -> str:
    """A spread of accuracies as `mean ± std [min–max]` overall, then `mean [min–max]` per attribute."""
    if not s:
        return "n/a"
    lo, hi, mean = s["min"], s["max"], s["mean"]
    per = ", ".join(f"{k} {mean[k]:.0%} [{lo[k]:.0%}–{hi[k]:.0%}]" for k in mean if k != "overall")
    return f"{mean['overall']:.1%} ± {s['std']['overall']:.1%} [{lo['overall']:.1%}–{hi['overall']:.1%}] ({per})"


def summary(m: dict, captions: list[str], truth: list[dict]) -> None:
    for c, t in zip(captions, truth):
        _say(f"caption: {c!r}   truth: {world.caption_of(t)!r}")
    sp = m["spread"]
    _say(f"mean ± std [min–max] over stage-2 seeds {m['seeds']['stage2']} (one stage-1 run, seed "
         f"{m['seeds']['stage1']}; vision tower: {m['vision_tower']}); {m['held_out_images']} held-out images")
    _say(f"caption attribute accuracy:                   {pct(sp['caption_accuracy'])}")
    _say(f"  the same stage 2 without stage 1:           {pct(sp.get('caption_accuracy_no_stage1'))}")
    _say(f"attributes read from stage-1 reconstructions: {pct(sp['reconstruction_accuracy'])}")
    f, fs = m["reconstruction_fid"], sp["reconstruction_fid"]
    _say(f"FID in miniature of the reconstructions:      {fs['mean']['value']:.3f} ± {fs['std']['value']:.3f} "
         f"[{fs['min']['value']:.3f}–{fs['max']['value']:.3f}] ({f['protocol']['features']}; guidance "
         f"{f['protocol']['guidance']}, {f['protocol']['steps']} steps, sampling seeds {f['seed']})")
    s = m["seconds"]
    _say(f"time: {s['total_s']:.0f}s (stage 1 {s['stage1_s']:.0f}s, stage 2 {s['stage2_s']:.0f}s"
         + (f", stage 2 without stage 1 {s['stage2_no_stage1_s']:.0f}s" if "stage2_no_stage1_s" in s else "")
         + f", evaluation {s['evaluate_s']:.0f}s); cost: {m['cost']['worker_hours']} worker-hours, "
         f"${m['cost']['usd']}")
    for k, v in m["artefacts"].items():
        _say(f"{k}: {v}")
