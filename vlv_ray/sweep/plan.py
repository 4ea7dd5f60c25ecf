"""A real-job sweep's points, checked and priced before anything starts.

Every point's jobs are loaded and validated (bad overrides, a missing job, an image count
past the manifest, a held-out set too small, an extractor that does not import: one line,
before Ray starts); then the cost model prices each point (`cost/estimate.estimate`, the
function `vlv-ray cost estimate` prints) and `check_budget` refuses a sweep whose total is
past the budget unless told to go ahead.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from vlv_ray.config import ConfigError, JobConfig, JobsSweepConfig, JobsSweepStageConfig, load_job
from vlv_ray.paths import PACKAGED_JOBS


def resolve_job(job: str, sweep_file: Path) -> Path:
    """A stage's job file: as written if absolute, else beside the sweep file, else packaged."""
    p = Path(job).expanduser()
    if p.is_absolute():
        return p
    beside = sweep_file.resolve().parent / p
    return beside if beside.is_file() or not (PACKAGED_JOBS / p).is_file() else PACKAGED_JOBS / p


@dataclass
class Estimate:
    """The cost model's figure for one run (None where it has none, with the reason)."""

    usd: float | None = None
    gpu_hours: float | None = None
    wall_hours: float | None = None
    where: str = ""  # "2 × g5.xlarge spot" or why there is no figure


@dataclass
class Point:
    images: int
    steps: int  # stage 1's steps to this point (images_seen: the one run's steps when it has seen `images`)
    stage1: JobConfig  # absolutized (vlv_ray/paths.py): what the run is handed
    stage2: JobConfig | None = None
    estimates: list[Estimate] = field(default_factory=list)  # stage 1 [, stage 2]

    @property
    def usd(self) -> float | None:
        costs = [e.usd for e in self.estimates]
        return None if any(c is None for c in costs) else sum(costs)

    @property
    def gpu_hours(self) -> float | None:
        hours = [e.gpu_hours for e in self.estimates]
        return None if any(h is None for h in hours) else sum(hours)


def _load(sweep_file: Path, key: str, stage: JobsSweepStageConfig, extra: list[str]) -> JobConfig:
    from vlv_ray.paths import absolutized

    job = resolve_job(stage.job, sweep_file)
    if not job.is_file():
        raise ConfigError(f"{sweep_file}: {key}.job: {job}: no such job file")
    try:
        cfg = load_job(job, [*stage.overrides, *extra])
    except ConfigError as e:
        raise ConfigError(f"{sweep_file}: {key}: {e}") from None
    want = 1 if key == "stage1" else 2
    if cfg.stage != want:
        raise ConfigError(f"{sweep_file}: {key}.job: {job} is a stage-{cfg.stage} job, expected stage {want}")
    return absolutized(cfg)


def run_name(job: JobConfig, spec: JobsSweepConfig, images: int) -> str:
    """Stable per point: re-running the sweep finds (and reuses) the points it finished."""
    return f"{job.name}-{spec.name}-n{images}"


def points(spec: JobsSweepConfig, sweep_file: Path) -> list[Point]:
    """Every point's jobs, validated; a data or held-out set that cannot serve them stops here."""
    from vlv_ray.data import shards
    from vlv_ray.data.pipeline import one_batch_per_worker

    base = _load(sweep_file, "stage1", spec.stage1, [])
    kw = base.storage.options
    manifest = shards.load_manifest(base.data.uri, **kw)
    biggest = max(spec.images)
    if biggest > manifest["rows"]:
        raise ConfigError(f"{sweep_file}: images: got {biggest}, expected at most the {manifest['rows']} images "
                          f"{base.data.uri}/manifest.json lists")
    held_out = shards.load_manifest(spec.eval.data, **kw)
    if held_out["rows"] < spec.eval.images:
        raise ConfigError(f"{sweep_file}: eval.images: got {spec.eval.images}, expected at most the "
                          f"{held_out['rows']} images {spec.eval.data}/manifest.json lists")
    _check_eval(spec, sweep_file, kw)
    out = []
    if spec.mode == "images_seen":
        cfg = _load(sweep_file, "stage1", spec.stage1, _images_seen_overrides(spec, sweep_file))
        if cfg.max_steps * cfg.global_batch_size < biggest:
            raise ConfigError(f"{sweep_file}: images: {biggest} images are never seen: the run ends at max_steps "
                              f"{cfg.max_steps} × global batch {cfg.global_batch_size} = "
                              f"{cfg.max_steps * cfg.global_batch_size}")
        for n in sorted(spec.images):  # one run; each point's estimate is the run up to it
            steps = math.ceil(n / cfg.global_batch_size)
            out.append(Point(n, steps, cfg, None, [estimate(_with_steps(cfg, steps), spec.stage1.throughput)]))
        return out
    from vlv_ray.paths import RunPaths

    s2_base = None  # the stage-2 job as written, for its name
    for n in sorted(spec.images):
        if need := one_batch_per_worker(base, n):  # base: the stage-1 job with the sweep's overrides
            raise ConfigError(f"{sweep_file}: images: got {n}, {need}")
        steps = base.max_steps if spec.epochs is None else max(1, math.ceil(spec.epochs * n / base.global_batch_size))
        s1 = _load(sweep_file, "stage1", spec.stage1,
                   [f"data.max_images={n}", f"max_steps={steps}", f"name={run_name(base, spec, n)}"])
        s2 = None
        if spec.stage2.job:
            export = [f"model.stage1={RunPaths.of(s1).export(1)}"]
            s2_base = s2_base or _load(sweep_file, "stage2", spec.stage2, export)
            s2 = _load(sweep_file, "stage2", spec.stage2, [*export, f"name={run_name(s2_base, spec, n)}"])
        ests = [estimate(s1, spec.stage1.throughput)] + ([estimate(s2, spec.stage2.throughput, "stage2")] if s2 else [])
        out.append(Point(n, steps, s1, s2, ests))
    return out


def _images_seen_overrides(spec: JobsSweepConfig, sweep_file: Path) -> list[str]:
    """The run's own images-seen evaluation (logging.eval_*) from the sweep's eval section."""
    if len(spec.eval.guidance) != 1:
        raise ConfigError(f"{sweep_file}: eval.guidance: got {spec.eval.guidance}, expected one scale in mode images_seen "
                          "(logging.eval_guidance)")
    e = spec.eval
    return [f"logging.eval_every_images={sorted(spec.images)}", f"logging.eval_data={e.data}",
            f"logging.eval_fid_images={e.images}", f"logging.eval_features={e.features}",
            f"logging.eval_guidance={e.guidance[0]}", f"logging.eval_sample_steps={e.steps}"]


def _with_steps(cfg: JobConfig, steps: int) -> JobConfig:
    from dataclasses import replace

    return replace(cfg, max_steps=steps)


def _check_eval(spec: JobsSweepConfig, sweep_file: Path, kw: dict) -> None:
    from vlv_ray.eval import features
    from vlv_ray.eval.job import check_pipeline

    try:
        features.load(spec.eval.features)
    except features.FeatureError as e:
        raise ConfigError(f"{sweep_file}: eval.{e}") from None
    if spec.eval.t2i:
        if not spec.stage2.job:
            raise ConfigError(f"{sweep_file}: eval.t2i: needs stage2.job (captions to draw from)")
        check_pipeline(spec.eval.t2i, **kw)


def estimate(cfg: JobConfig, throughput: float | None, key: str = "stage1") -> Estimate:
    """The cost model's dollars and GPU-hours for `cfg` on its instance type (cost.instance_type,
    else the cheapest) in its market (cost.market), as `vlv-ray cost estimate` prints them."""
    from vlv_ray.cost import catalog, estimate as est
    from vlv_ray.cost.catalog import CatalogError

    try:
        m = est.in_market(cfg, catalog.load(cfg.cost.prices_csv), throughput=throughput, instance=None,
                          market=cfg.cost.market, source=key)
    except est.NoThroughput as err:  # the sweep file has a key for the figure estimate() lacks
        return Estimate(where=f"no estimate ({err.reason}; set {key}.throughput, samples/s per GPU)")
    except CatalogError as err:
        return Estimate(where=f"no estimate ({err})")
    if m is None:
        return Estimate(where="no estimate (no catalog row can run this job)")
    return Estimate(m.usd, m.row["gpu_hours"], m.wall_hours,
                    f"{m.row['nodes']} × {m.row['instance_type']} {m.market}")


def total_usd(spec: JobsSweepConfig, pts: list[Point]) -> float | None:
    """The sweep's estimated dollars (None: not every run has an estimate): every point's runs,
    or for `images_seen` the one run to its max_steps (past the last point when the job goes on)."""
    if spec.mode == "images_seen":
        return estimate(pts[0].stage1, spec.stage1.throughput).usd if pts else 0.0
    return None if any(p.usd is None for p in pts) else sum(p.usd for p in pts)


def check_budget(total: float | None, budget_usd: float | None, yes: bool) -> None:
    """Past `budget_usd`, or with no estimate to hold against one, a ConfigError unless `yes`."""
    if budget_usd is None or yes:
        return
    if total is None:
        raise ConfigError(f"budget_usd: the cost model has no estimate for every point, so the budget "
                          f"${budget_usd:,.2f} cannot be checked (set stage1.throughput / stage2.throughput in the "
                          "sweep file); nothing started; pass yes=True to start anyway")
    if total > budget_usd:
        raise ConfigError(f"budget_usd: the sweep's estimate ${total:,.4f} is over the budget ${budget_usd:,.4f}; "
                          "nothing started; pass yes=True to start anyway")


def format_estimates(pts: list[Point], mode: str, total: float | None) -> str:
    lines = [f"  {'images':>10} {'steps':>8} {'GPU-h':>9} {'$':>10}  priced as"]
    for p in pts:
        gh = "-" if p.gpu_hours is None else f"{p.gpu_hours:,.3g}"
        usd = "-" if p.usd is None else f"{p.usd:,.4f}"
        where = "; ".join(e.where for e in p.estimates)
        lines.append(f"  {p.images:>10,} {p.steps:>8,} {gh:>9} {usd:>10}  {where}")
    what = f"the one run, {pts[0].stage1.max_steps:,} steps" if mode == "images_seen" and pts else "every point"
    lines.append(f"  total ({what}): " + ("no estimate" if total is None else f"${total:,.4f}"))
    return "\n".join(lines)
