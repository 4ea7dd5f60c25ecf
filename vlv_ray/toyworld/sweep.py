"""`vlv-ray sweep`: the paper's data-volume experiment (its Table 5) and the query-count
ablation in the miniature world, as a Ray Tune grid over images × queries.

Each point is one Tune trial running `point.point`: world data → stage 1 (Ray Train inside
the trial) → stage 2 at the sweep's fixed budget → held-out caption accuracy and cost. The
trial reserves almost no CPU of its own (`trial.cpus`, default 0.01): it only drives its runs, whose
Ray Train workers reserve theirs, so a cluster runs `trial.max_concurrent` points side by
side and a laptop one after another. A point that fails is a failed row; the rest still run.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

from vlv_ray.config import ConfigError, SweepConfig, load_job
from vlv_ray.sweep.plan import resolve_job
from vlv_ray.sweep.report import error_line  # noqa: F401 (this module's API too)
from vlv_ray.toyworld import sweep_report
from vlv_ray.toyworld.models import NUM_QUERIES
from vlv_ray.toyworld.point import Stages, paired_count


def _say(msg: str) -> None:
    print(f"[sweep] {msg}", flush=True)


def parse_counts(flag: str, text: str | None) -> list[int] | None:
    """`--images 1000,3000` → [1000, 3000]; anything else is one line naming the flag."""
    if text is None:
        return None
    try:
        counts = [int(t) for t in text.split(",")]
    except ValueError:
        counts = []
    if not counts or any(n < 1 for n in counts):
        raise ConfigError(f"{flag}: got {text!r}, expected comma-separated whole numbers ≥ 1, e.g. 1000,3000")
    return counts


def stages_of(spec: SweepConfig, sweep_file: Path, *, queries_key: str = "queries") -> Stages:
    """The sweep's two stages, every point's jobs validated now: bad overrides or query counts
    stop here, with one line, before Ray starts."""
    stages = Stages(resolve_job(spec.stage1.job, sweep_file), resolve_job(spec.stage2.job, sweep_file),
                    list(spec.stage1.overrides), list(spec.stage2.overrides))
    for key, job, overrides in (("stage1", stages.stage1_job, stages.stage1_overrides),
                                ("stage2", stages.stage2_job, stages.stage2_overrides)):
        if not job.is_file():
            raise ConfigError(f"{sweep_file}: {key}.job: {job}: no such job file")
        # Stage 2's export comes from the point's stage 1: any path passes validation here.
        placeholder = ["model.stage1=stage1-export"] if key == "stage2" else []

        def load(extra: list[str]):
            try:
                return load_job(job, [*overrides, *extra, *placeholder])
            except ConfigError as e:
                raise ConfigError(f"{sweep_file}: {key}: {e}") from None

        too_many = [q for q in spec.queries if q > NUM_QUERIES]
        if too_many and load([]).model.preset == "toy":  # named by the flag or key that set it, not by the job
            raise ConfigError(f"{queries_key}: got {too_many[0]}, expected counts ≤ {NUM_QUERIES}: the toy "
                              f"preset's model.num_queries is at most {NUM_QUERIES}, the teacher's CLIP context "
                              f"(e.g. 4,8,16)")
        for q in spec.queries:
            load([f"model.num_queries={q}"])
    return stages


def _trial(config: dict) -> None:
    """One point, run inside a Tune trial; its metrics go to Tune with `tune.report`."""
    from ray import tune

    from vlv_ray.toyworld.point import point

    images, queries = config["images"], config["queries"]
    label = f"n={images} q={queries}"
    stages = Stages(Path(config["stage1_job"]), Path(config["stage2_job"]), config["stage1_overrides"],
                    config["stage2_overrides"]).with_queries(queries)
    p = point(Path(config["workdir"]) / "points" / f"n{images}-q{queries}", images=images,
              paired_fraction=config["paired_fraction"], held_out=config["held_out"], stages=stages,
              tag=f"{config['stamp']}-n{images}-q{queries}", say=lambda m: print(f"[sweep {label}] {m}", flush=True))
    tune.report(p.metrics)


def _progress_callback(total: int):
    """One line per trial start and end on the terminal (Tune's own tables are turned off)."""
    from ray import tune

    class Progress(tune.Callback):
        def __init__(self):
            self.started: dict[str, float] = {}

        def on_trial_start(self, iteration, trials, trial, **info):
            self.started[trial.trial_id] = time.time()
            _say(f"point {len(self.started)}/{total} started: {trial.config['images']} images, "
                 f"{trial.config['queries']} queries (trial {trial.trial_id})")

        def on_trial_complete(self, iteration, trials, trial, **info):
            m = trial.last_result or {}
            acc = (m.get("caption_accuracy") or {}).get("overall")
            fid = (m.get("reconstruction_fid") or {}).get("value", float("nan"))
            _say(f"point done: {trial.config['images']} images, {trial.config['queries']} queries: caption accuracy "
                 f"{acc:.1%}, reconstruction FID {fid:.3f}, ${(m.get('cost') or {}).get('usd', 0):.4f}, "
                 f"{self._took(trial):.0f}s"
                 if acc is not None else f"point done: {trial.config['images']} images (no metrics)")

        def on_trial_error(self, iteration, trials, trial, **info):
            _say(f"point FAILED: {trial.config['images']} images, {trial.config['queries']} queries, after "
                 f"{self._took(trial):.0f}s: {error_line(trial.error_file)}")

        def _took(self, trial) -> float:
            return time.time() - self.started.get(trial.trial_id, time.time())

    return Progress()


def run(sweep_file: str | Path, spec: SweepConfig, stages: Stages, *, workdir: str | Path = "vlv-sweep") -> list[dict]:
    """Run every point of `spec` as a Ray Tune trial; write sweep.csv/md/png in `workdir`; return the rows."""
    from ray import tune

    from vlv_ray import storage
    from vlv_ray.train.launch import ensure_ray

    work = Path(workdir).resolve()
    storage.check_writable(str(work))  # before any point runs
    stamp = time.strftime("%Y%m%d-%H%M%S")
    points = len(spec.images) * len(spec.queries)
    _say(f"{spec.name}: {points} points ({len(spec.images)} image counts × {len(spec.queries)} query counts), "
         f"{spec.trial.max_concurrent} at a time; stage 1 {stages.stage1_job.name}, stage 2 {stages.stage2_job.name}; "
         f"{spec.paired_fraction:.0%} of the images captioned; {spec.held_out} held-out images; output in {work}")
    ensure_ray()
    # Tune's new console output prints its config box and TensorBoard hint at any verbosity;
    # the legacy one at verbose=0 prints nothing, leaving the terminal to the progress lines.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    space = {
        "images": tune.grid_search(spec.images), "queries": tune.grid_search(spec.queries),
        "workdir": str(work), "stamp": stamp, "paired_fraction": spec.paired_fraction, "held_out": spec.held_out,
        "stage1_job": str(stages.stage1_job), "stage2_job": str(stages.stage2_job),
        "stage1_overrides": stages.stage1_overrides, "stage2_overrides": stages.stage2_overrides,
    }
    tuner = tune.Tuner(
        tune.with_resources(_trial, {"cpu": spec.trial.cpus}),
        param_space=space,
        tune_config=tune.TuneConfig(max_concurrent_trials=spec.trial.max_concurrent,
                                    trial_dirname_creator=lambda t: f"n{t.config['images']}-q{t.config['queries']}"),
        run_config=tune.RunConfig(name=f"{spec.name}-{stamp}", storage_path=str(work / "tune"), verbose=0,
                                  failure_config=tune.FailureConfig(max_failures=0),
                                  callbacks=[_progress_callback(points)]),
    )
    grid = tuner.fit()
    rows = []
    for r in grid:
        config = {**r.config, "paired_images": paired_count(r.config["images"], spec.paired_fraction)}
        rows.append(sweep_report.row(config, r.metrics, error_line(r.error) if r.error else None))
    rows.sort(key=lambda r: (r["queries"], r["images"]))
    paths = sweep_report.write(rows, work, f"{spec.name}: held-out caption accuracy")
    failed = sum(r["status"] != "ok" for r in rows)
    _say(f"{len(rows) - failed} of {len(rows)} points done" + (f", {failed} failed" if failed else "")
         + f"; Tune experiment: {grid.experiment_path}")
    print(paths["md"].read_text(), end="", flush=True)
    for k, p in paths.items():
        _say(f"{k}: {p}")
    return rows
