"""Running a real-job sweep's points and measuring them.

`subsets`: per point, stage 1 on the manifest's first N images (Ray Train, as `vlv-ray
train`), `eval recon` of its export on the held-out set (Ray Data + an actor pool, as
`vlv-ray eval recon`), then, when the sweep names one, stage 2 on that export and `eval
caption`. A point whose export is already there at its last step with the same job hash
(the sweep run before) is not trained again. A point's time and dollars are what its runs'
ledgers recorded, so a reused point reports what it cost when it ran. Points run one after
another on the connected cluster; each run spreads over the cluster as its job's scaling
section says. A point that fails is a failed row; the rest still run.

`images_seen`: the one stage-1 run with `logging.eval_every_images` at the image counts;
its `eval.jsonl` lines are the points (a run that already has every point is only read).
"""
from __future__ import annotations

import time
from pathlib import Path

from vlv_ray import storage
from vlv_ray.config import JobConfig, JobsSweepConfig
from vlv_ray.sweep import report
from vlv_ray.sweep.plan import Point
from vlv_ray.train import launch


def _say(msg: str) -> None:
    print(f"[sweep] {msg}", flush=True)


def _train(cfg: JobConfig, resume_hint: str = "") -> dict:
    """The job through the real launcher: its last metrics; not run again ({}) when its export is
    already there at max_steps with this job's hash."""
    from vlv_ray.models import export
    from vlv_ray.paths import RunPaths

    paths = RunPaths.of(cfg)
    meta_uri = storage.join(paths.export(cfg.stage), export.META_FILE)
    if storage.exists(meta_uri, **paths.storage):
        meta = storage.read_json(meta_uri, **paths.storage)
        if meta.get("step") == cfg.max_steps and meta.get("config_hash") == cfg.config_hash():
            _say(f"{cfg.name}: finished before (export at step {cfg.max_steps}): not trained again")
            return {}
    # Connects to (or starts) Ray itself; a SIGTERM/SIGINT raises launch.Stopped, which ends the sweep.
    result = launch.run(cfg, paths=paths, resume_hint=resume_hint)
    if result.error:
        from vlv_ray.train.failure import describe

        raise RuntimeError(f"{cfg.name} failed: {describe(result.error, paths)}")
    return dict(result.metrics or {})


def _evaluate(spec: JobsSweepConfig, kind: str, export_uri: str, out: Path, kw: dict) -> dict:
    import logging

    from vlv_ray.eval import job
    from vlv_ray.train.launch import ensure_ray

    ensure_ray()
    logging.getLogger("ray.data").setLevel(logging.WARNING)  # its per-dataset INFO lines would bury the sweep's
    e = spec.eval
    s = job.EvalSpec(kind=kind, export=export_uri, data=e.data, images=e.images, guidance=list(e.guidance),
                     steps=e.steps, seed=e.seed, features=e.features, clip=e.clip,
                     t2i=e.t2i if kind == "caption" else None, batch_size=e.batch_size, storage_kw=kw)
    return job.run(s, out=str(out), progress=False)


def _metric(summary: dict, name: str) -> float | None:
    """The first result of that metric: the first guidance scale's."""
    return next((r["value"] for r in summary["results"] if r["metric"] == name), None)


def _measured(runs: list[JobConfig]) -> dict:
    """What the runs' own ledgers (<run>/cost/ledger.json) recorded, summed: the seconds their drivers
    metered (every session of a resumed run), worker- and GPU-hours (workers × those seconds; GPU
    workers hold one GPU each) and dollars. Read from the run directories, so a point that a re-run
    sweep reuses reports what it cost when it ran."""
    from vlv_ray.cost.ledger import Ledger
    from vlv_ray.paths import RunPaths

    wall_s = worker_s = gpu_s = usd = 0.0
    for cfg in runs:
        paths = RunPaths.of(cfg)
        led = Ledger.load(paths.run, cfg.name, **paths.storage)
        wall_s += led.metered_s
        worker_s += cfg.scaling.num_workers * led.metered_s
        gpu_s += cfg.scaling.num_workers * led.metered_s if cfg.scaling.use_gpu else 0.0
        usd += led.total_usd
    return {"wall_s": round(wall_s, 1), "worker_hours": round(worker_s / 3600, 5),
            "gpu_hours": round(gpu_s / 3600, 5), "usd": round(usd, 5)}


def subset_point(spec: JobsSweepConfig, p: Point, work: Path, resume_hint: str = "") -> dict:
    """One point: stage 1 on the first N images → eval recon [→ stage 2 → eval caption] → its row."""
    from vlv_ray.paths import RunPaths

    out = work / "points" / f"n{p.images}"
    kw = p.stage1.storage.options
    s1 = _train(p.stage1, resume_hint)
    _say(f"n={p.images}: reconstruction FID of {RunPaths.of(p.stage1).export(1)} on {spec.eval.images} held-out "
         "images")
    recon = _evaluate(spec, "recon", RunPaths.of(p.stage1).export(1), out / "recon", kw)
    row = {"recon_fid": _metric(recon, "recon_fid"), "clip_image_image": _metric(recon, "clip_image_image"),
           "stage1_loss": s1.get("loss"), "run": RunPaths.of(p.stage1).run}
    if p.stage2 is not None:
        s2 = _train(p.stage2, resume_hint)
        _say(f"n={p.images}: captions of {RunPaths.of(p.stage2).run} on {spec.eval.images} held-out images")
        cap = _evaluate(spec, "caption", RunPaths.of(p.stage2).run, out / "caption", kw)
        row.update(caption_clip=_metric(cap, "clip_text_image"), caption_t2i_fid=_metric(cap, "caption_t2i_fid"),
                   stage2_loss=s2.get("loss"))
    return {**row, **_measured([p.stage1] + ([p.stage2] if p.stage2 is not None else [])), "steps": p.steps}


def images_seen_points(spec: JobsSweepConfig, pts: list[Point], resume_hint: str = "") -> list[dict]:
    """The one run (trained unless its eval.jsonl has every point), its eval.jsonl lines as rows."""
    from vlv_ray.eval.during import recorded
    from vlv_ray.paths import RunPaths

    cfg = pts[0].stage1
    paths = RunPaths.of(cfg)
    have = {int(r["images_seen"]) for r in recorded(paths.eval_log, **paths.storage)}
    error = None
    if not {p.images for p in pts} <= have:
        try:
            _train(cfg, resume_hint)
        except launch.Stopped:
            raise
        except Exception as e:  # the points it reached are still rows
            error = report.error_line(e)
            _say(f"{cfg.name} FAILED: {error}")
    else:
        _say(f"{paths.eval_log}: every point recorded: nothing to train")
    from vlv_ray.cost.ledger import ledger_uri

    # The run's ledger, when it has one (trained now or before): its whole time and hours.
    ran = storage.exists(ledger_uri(paths.run), **paths.storage)
    measured = {k: v for k, v in _measured([cfg]).items() if k != "usd"} if ran else {}
    lines = {int(r["images_seen"]): r for r in recorded(paths.eval_log, **paths.storage)}
    rows = []
    for p in pts:
        r = lines.get(p.images)
        if r is None:
            rows.append(_row(p, "failed", error=error or f"{paths.eval_log}: no line for {p.images} images seen"))
            continue
        # Wall time and hours are the whole run's: eval.jsonl records dollars so far, not hours.
        rows.append(_row(p, "ok", steps=r["step"], recon_fid=r["fid"], usd=r.get("usd"), run=paths.run,
                         **(measured if p is pts[-1] else {})))
    return rows


def _row(p: Point, status: str, **measured) -> dict:
    """A point's row: what was measured, beside the cost model's estimate."""
    return {"images": p.images, "status": status, **measured, "est_gpu_hours": p.gpu_hours, "est_usd": p.usd}


def run(spec: JobsSweepConfig, pts: list[Point], *, workdir: str | Path, resume_hint: str = "") -> list[dict]:
    """Every point, one after another; sweep.csv/md/png in `workdir`; the rows. A stopped run
    (SIGTERM/SIGINT) ends the sweep with `launch.Stopped`: re-running it reuses finished points
    and resumes the stopped one (`resume_hint`: the command to name)."""
    work = Path(workdir).resolve()
    storage.check_writable(str(work))
    if spec.mode == "images_seen":
        rows = images_seen_points(spec, pts, resume_hint)
    else:
        rows = []
        for i, p in enumerate(pts, 1):
            _say(f"point {i}/{len(pts)}: the first {p.images:,} images, {p.steps} steps "
                 f"({p.stage1.name})")
            t0 = time.time()
            try:
                rows.append(_row(p, "ok", **subset_point(spec, p, work, resume_hint)))
                r = rows[-1]
                _say(f"point done: {p.images:,} images: reconstruction FID {r['recon_fid']:.4f}, "
                     f"${r['usd']:.4f}, {time.time() - t0:.0f}s")
            except launch.Stopped:
                raise
            except Exception as e:  # a failed point is a row; the others still run
                rows.append(_row(p, "failed", error=report.error_line(e)))
                _say(f"point FAILED: {p.images:,} images: {rows[-1]['error']}")
    rows.sort(key=lambda r: r["images"])
    paths = report.write(rows, work, f"{spec.name}: reconstruction FID ({spec.mode}, guidance {spec.eval.guidance[0]:g}, "
                                     f"{spec.eval.images} held-out images)")
    failed = sum(r["status"] != "ok" for r in rows)
    _say(f"{len(rows) - failed} of {len(rows)} points done" + (f", {failed} failed" if failed else ""))
    print(paths["md"].read_text(), end="", flush=True)
    for k, path in paths.items():
        _say(f"{k}: {path}")
    return rows
