"""`vlv-ray demo`: the whole method in the miniature world, on a local Ray cluster.

world → shards (the normal data plane) → stage 1 on images only (2 Ray Train workers,
DeepSpeed) → stage 2 on captions for 10% of those images → the same stage 2 on an encoder
that skipped stage 1 → captions for held-out images, reconstructions, attribute accuracy →
`metrics.json` and a cost summary.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from vlv_ray.toyworld import evaluate, world
from vlv_ray.toyworld.assets import TEACHER_DIR

JOBS = Path(__file__).resolve().parents[1] / "jobs"  # package data (vlv_ray/jobs): any install, any directory
WORLD_SEED = 7  # the demo's training images; the held-out images use reader.HELD_OUT_SEED


def _say(msg: str) -> None:
    print(f"[demo] {msg}", flush=True)


def _train(job: str, overrides: list[str]) -> tuple[dict, float]:
    """Run a job through the real launcher; (its last metrics, wall seconds)."""
    from vlv_ray.config import load_job
    from vlv_ray.train import launch

    cfg = load_job(JOBS / job, overrides)
    _say(f"{cfg.name}: stage {cfg.stage}, {cfg.max_steps} steps × {cfg.global_batch_size} images, "
         f"{cfg.scaling.num_workers} Ray Train workers, DeepSpeed ZeRO-{cfg.deepspeed.zero_stage}")
    t0 = time.time()
    result = launch.run(cfg)
    if result.error:
        raise RuntimeError(f"{cfg.name} failed: {result.error}")
    return {**(result.metrics or {}), "workers": cfg.scaling.num_workers}, time.time() - t0


def run(workdir: str | Path = "vlv-demo", *, images: int = 6000, paired_fraction: float = 0.1, held_out: int = 500,
        stage1_overrides: list[str] | None = None, stage2_overrides: list[str] | None = None,
        compare: bool = True, stage1_only: bool = False) -> dict:
    """Run the demo in `workdir`; return the metrics (also written to `workdir/metrics.json`).
    `stage1_only`: stop after the stage-1 run and its export (a quick check of an install)."""
    from vlv_ray import storage

    t_start = time.time()
    work = Path(workdir).resolve()
    storage.check_writable(str(work))  # before minutes of work, not after
    runs, stamp = work / "runs", time.strftime("%Y%m%d-%H%M%S")
    teacher = str(TEACHER_DIR)
    paired = max(1, int(images * paired_fraction))
    timings: dict[str, float] = {}

    t0 = time.time()
    data1, data2 = work / "data" / "stage1", work / "data" / "stage2"
    if not (data1 / "manifest.json").is_file():
        world.write_dataset(str(data1), work / "images" / "stage1", WORLD_SEED, images, captions=False)
    if not (data2 / "manifest.json").is_file():  # the first `paired` of the same images, now with captions
        world.write_dataset(str(data2), work / "images" / "stage2", WORLD_SEED, paired, captions=True)
    timings["world_s"] = time.time() - t0
    _say(f"world: {images} images (no captions) → {data1}; {paired} of them with captions "
         f"({paired / images:.0%}) → {data2} ({timings['world_s']:.0f}s)")

    common = [f"storage_path={runs}", f"model.stable_diffusion={teacher}"]
    s1_name = f"toy-stage1-{stamp}"
    s1, timings["stage1_s"] = _train("toy-stage1.yaml", [f"name={s1_name}", f"data.uri={data1}", *common,
                                                          *(stage1_overrides or [])])
    stage1 = runs / s1_name / "export" / "stage1"
    if stage1_only:
        _say(f"stage 1 done ({timings['stage1_s']:.0f}s): export {stage1}")
        return {"stage1_final_loss": s1.get("loss"), "seconds": {k: round(v, 1) for k, v in timings.items()},
                "artefacts": {"workdir": str(work), "stage1_export": str(stage1)}}
    s2_name = f"toy-stage2-{stamp}"
    s2, timings["stage2_s"] = _train("toy-stage2.yaml", [f"name={s2_name}", f"data.uri={data2}", *common,
                                                          f"model.stage1={stage1}", *(stage2_overrides or [])])
    baseline = None
    if compare:
        untrained = evaluate.untrained_stage1(runs / f"no-stage1-{stamp}", num_queries=16, resolution=world.SIZE,
                                              sd_path=teacher)
        b_name = f"toy-stage2-no-stage1-{stamp}"
        _say(f"the same stage 2 on an encoder that skipped stage 1 ({untrained})")
        baseline, timings["stage2_no_stage1_s"] = _train(
            "toy-stage2.yaml", [f"name={b_name}", f"data.uri={data2}", *common, f"model.stage1={untrained}",
                                *(stage2_overrides or [])])

    t0 = time.time()
    x, truth = evaluate.held_out(held_out)
    _say(f"captioning {held_out} held-out images (world seed {evaluate.attribute_reader.HELD_OUT_SEED})")
    cap_acc, captions = evaluate.caption_accuracy(str(runs / s2_name), x, truth)
    (work / "captions.jsonl").write_text("".join(
        json.dumps({"index": i, "caption": c, "truth": world.caption_of(t)}) + "\n"
        for i, (c, t) in enumerate(zip(captions, truth))))
    base_acc = evaluate.caption_accuracy(str(runs / b_name), x, truth)[0] if compare else None
    _say(f"reconstructing {held_out} held-out images from their stage-1 caption embeddings")
    recon = evaluate.reconstructions(str(stage1), x)
    rec_acc = evaluate.read_accuracy(recon, truth)
    evaluate.pairs_grid(x, recon, n=32).save(work / "reconstructions.png")
    timings["evaluate_s"] = time.time() - t0
    timings["total_s"] = time.time() - t_start

    worker_s = sum(m["workers"] * timings[k] for m, k in ((s1, "stage1_s"), (s2, "stage2_s")))
    if baseline:
        worker_s += baseline["workers"] * timings["stage2_no_stage1_s"]
    metrics = {
        "caption_accuracy": cap_acc,
        "caption_accuracy_no_stage1": base_acc,
        "reconstruction_accuracy": rec_acc,
        "held_out_images": held_out, "stage1_images": images, "stage2_images": paired,
        "stage1_final_loss": s1.get("loss"), "stage2_final_loss": s2.get("loss"),
        "seconds": {k: round(v, 1) for k, v in timings.items()},
        "cost": {"worker_hours": round(worker_s / 3600, 4),
                 "usd": round(sum(m.get("cost_usd", 0.0) for m in (s1, s2, baseline or {})), 4)},
        "artefacts": {"workdir": str(work), "stage1_export": str(stage1),
                      "stage2_export": str(runs / s2_name / "export" / "stage2"),
                      "captions": str(work / "captions.jsonl"), "reconstructions": str(work / "reconstructions.png"),
                      "metrics": str(work / "metrics.json"), "teacher": teacher},
    }
    (work / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    _summary(metrics, captions[:4], truth[:4])
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
    s = m["seconds"]
    _say(f"time: {s['total_s']:.0f}s (stage 1 {s['stage1_s']:.0f}s, stage 2 {s['stage2_s']:.0f}s"
         + (f", stage 2 without stage 1 {s['stage2_no_stage1_s']:.0f}s" if "stage2_no_stage1_s" in s else "")
         + f", evaluation {s['evaluate_s']:.0f}s); cost: {m['cost']['worker_hours']} worker-hours, "
         f"${m['cost']['usd']}")
    for k, v in m["artefacts"].items():
        _say(f"{k}: {v}")
