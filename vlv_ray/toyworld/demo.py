"""`vlv-ray demo`: the whole method in the miniature world, on a local Ray cluster.

One point (`point.py`): world → shards (the normal data plane) → stage 1 on images only
(2 Ray Train workers, DeepSpeed) → stage 2 on captions for 10% of those images → held-out
caption accuracy; then the same stage 2 on an encoder that skipped stage 1, reconstructions
and their attribute accuracy → `metrics.json` and a cost summary.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from vlv_ray.toyworld import evaluate, world
from vlv_ray.toyworld.assets import TEACHER_DIR
from vlv_ray.toyworld.point import (JOBS, Stages, common_overrides, demo_say as _say, paired_count, point, runs_cost,
                                    run_stage1, runs_dir, train_job, write_world)


def run(workdir: str | Path = "vlv-demo", *, images: int = 6000, paired_fraction: float = 0.1, held_out: int = 500,
        stage1_overrides: list[str] | None = None, stage2_overrides: list[str] | None = None,
        compare: bool = True, stage1_only: bool = False) -> dict:
    """Run the demo in `workdir`; return the metrics (also written to `workdir/metrics.json`).
    `stage1_only`: stop after the stage-1 run and its export (a quick check of an install)."""
    from vlv_ray import storage

    t_start = time.time()
    work = Path(workdir).resolve()
    storage.check_writable(str(work))  # before minutes of work, not after
    stamp = time.strftime("%Y%m%d-%H%M%S")
    teacher = str(TEACHER_DIR)
    stages = Stages(stage1_overrides=list(stage1_overrides or []), stage2_overrides=list(stage2_overrides or []))
    if stage1_only:
        t0 = time.time()
        data1, _ = write_world(work, images, paired_count(images, paired_fraction))
        world_s = time.time() - t0
        s1, stage1_s, export1 = run_stage1(work, data1, stamp, stages)
        _say(f"stage 1 done ({stage1_s:.0f}s): export {export1}")
        return {"stage1_final_loss": s1.get("loss"), "seconds": {"world_s": round(world_s, 1),
                                                                 "stage1_s": round(stage1_s, 1)},
                "artefacts": {"workdir": str(work), "stage1_export": str(export1)}}

    p = point(work, images=images, paired_fraction=paired_fraction, held_out=held_out, stages=stages, tag=stamp)
    timings = dict(p.metrics["seconds"])
    cost_runs = [p.stage1, p.stage2]
    x, truth = evaluate.held_out(held_out)
    base_acc = None
    if compare:
        untrained = evaluate.untrained_stage1(runs_dir(work) / f"no-stage1-{stamp}", num_queries=p.metrics["queries"],
                                              resolution=world.SIZE, sd_path=teacher)
        b_name = f"toy-stage2-no-stage1-{stamp}"
        _say(f"the same stage 2 on an encoder that skipped stage 1 ({untrained})")
        baseline = train_job(JOBS / "toy-stage2.yaml", [f"name={b_name}", f"data.uri={work / 'data' / 'stage2'}",
                                                    *common_overrides(work), f"model.stage1={untrained}",
                                                    *stages.stage2_overrides])
        timings["stage2_no_stage1_s"] = baseline[1]
        cost_runs.append(baseline)
        t0 = time.time()
        base_acc = evaluate.caption_accuracy(str(runs_dir(work) / b_name), x, truth)[0]
        timings["evaluate_s"] += time.time() - t0

    evaluate.pairs_grid(x, p.reconstructions, n=32).save(work / "reconstructions.png")
    timings["total_s"] = time.time() - t_start

    metrics = {
        "caption_accuracy": p.metrics["caption_accuracy"],
        "caption_accuracy_no_stage1": base_acc,
        "reconstruction_accuracy": p.metrics["reconstruction_accuracy"],
        "reconstruction_fid": p.metrics["reconstruction_fid"],
        "held_out_images": held_out, "stage1_images": images, "stage2_images": p.metrics["paired_images"],
        "stage1_final_loss": p.metrics["stage1_final_loss"], "stage2_final_loss": p.metrics["stage2_final_loss"],
        "seconds": {k: round(v, 1) for k, v in timings.items()},
        "cost": runs_cost(cost_runs),
        "artefacts": {"workdir": str(work), "stage1_export": str(p.stage1_export),
                      "stage2_export": str(p.stage2_run / "export" / "stage2"),
                      "captions": str(work / "captions.jsonl"), "reconstructions": str(work / "reconstructions.png"),
                      "metrics": str(work / "metrics.json"), "teacher": teacher},
    }
    (work / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    _summary(metrics, p.captions[:4], truth[:4])
    return metrics


def _pct(acc: dict | None) -> str:
    if not acc:
        return "n/a"
    per = ", ".join(f"{k} {v:.0%}" for k, v in acc.items() if k != "overall")
    return f"{acc['overall']:.1%} ({per})"


def _summary(m: dict, captions: list[str], truth: list[dict]) -> None:
    for c, t in zip(captions, truth):
        _say(f"caption: {c!r}   truth: {world.caption_of(t)!r}")
    _say(f"caption attribute accuracy, {m['held_out_images']} held-out images: {_pct(m['caption_accuracy'])}")
    _say(f"  the same stage 2 without stage 1:                  {_pct(m['caption_accuracy_no_stage1'])}")
    _say(f"attributes read from stage-1 reconstructions:       {_pct(m['reconstruction_accuracy'])}")
    f = m["reconstruction_fid"]
    _say(f"FID in miniature of the reconstructions:            {f['value']:.3f} ({f['protocol']['features']}; "
         f"guidance {f['protocol']['guidance']}, {f['protocol']['steps']} steps, seed {f['protocol']['seed']})")
    s = m["seconds"]
    _say(f"time: {s['total_s']:.0f}s (stage 1 {s['stage1_s']:.0f}s, stage 2 {s['stage2_s']:.0f}s"
         + (f", stage 2 without stage 1 {s['stage2_no_stage1_s']:.0f}s" if "stage2_no_stage1_s" in s else "")
         + f", evaluation {s['evaluate_s']:.0f}s); cost: {m['cost']['worker_hours']} worker-hours, "
         f"${m['cost']['usd']}")
    for k, v in m["artefacts"].items():
        _say(f"{k}: {v}")
