"""`vlv-ray launch`: one command from estimate to torn-down cluster.

    prepare  the job, the rendered cluster file (Ray's schema), credentials, storage the
             cluster can reach, the worker pools that fit the job, the launch name: all bad
             input is found here, before anything bills
    estimate the cost model's figure for the first pool + the head; past --budget: confirm
    up       the backend starts the cluster with the first pool on; wait for the dashboard
    submit   as `vlv-ray submit` does (no secrets forwarded), the budget left for the job
    follow   the job's log lines with one status line under them; capacity fallback
    end      however it ends (success, failure, budget, Ctrl-C): copy the exports where the
             job says (launch.export_to), then tear the cluster down unless --keep

Every step is recorded in the launch state (state.py), so running the same command again
after an interruption picks up where it stopped: it never starts a second cluster.
"""
from __future__ import annotations

import contextlib
import signal
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator

from vlv_ray import storage
from vlv_ray.config import ConfigError, JobConfig, load_job
from vlv_ray.cost import catalog as catalog_mod
from vlv_ray.cost.catalog import CatalogError
from vlv_ray.launch import backend as backends
from vlv_ray.launch.clusterfile import ClusterSpec, Pool, dump, missing_credentials
from vlv_ray.launch.follow import Follower, wait_dashboard
from vlv_ray.launch.state import LaunchState, Lock
from vlv_ray.launch.watch import ClusterWatch
from vlv_ray.paths import RunPaths, absolutize, for_job

EXIT = {"succeeded": 0, "failed": 1, "budget": 1, "interrupted": 130}


@dataclass
class LaunchOptions:
    job: str
    cluster: str
    overrides: list[str]
    budget_usd: float | None = None
    yes: bool = False
    keep: bool = False
    dry_run: bool = False
    capacity_wait_s: float = 600.0
    allow_on_demand: bool = False
    throughput: float | None = None
    poll_s: float = 2.0


@dataclass
class Plan:
    cfg: JobConfig
    spec: ClusterSpec
    pools: list[Pool]
    state: LaunchState
    paths: RunPaths  # the run's directory and storage options, as the job's driver will see them


def worker_need(cfg: JobConfig) -> dict[str, float]:
    """What one Ray Train worker of the job asks a node for (as train/launch.py builds it)."""
    from vlv_ray.train.launch import worker_resources

    need = dict(worker_resources(cfg))
    if cfg.scaling.accelerator_type:
        need[f"accelerator_type:{cfg.scaling.accelerator_type}"] = 0.001
    return need


def prepare(opts: LaunchOptions) -> Plan:
    cfg = load_job(opts.job, opts.overrides)
    spec = ClusterSpec(opts.cluster)
    if spec.remote:
        for key, uri in (("storage_path", cfg.storage_path), ("data.uri", cfg.data.uri),
                         ("model.stage1", cfg.model.stage1 or "s3://")):
            if not storage.on_object_store(uri):
                raise ConfigError(f"{opts.job}: {key}: got {uri!r}, a path on this machine; the cluster in "
                                  f"{opts.cluster} runs on {spec.provider}, whose nodes cannot reach it: expected "
                                  "an s3:// or gs:// URI")
        missing = missing_credentials(spec.provider)
        if missing:
            raise ConfigError(f"{opts.cluster}: provider {spec.provider}: {missing}")
    _submittable(opts.job)
    pools = spec.pools(worker_need(cfg), allow_on_demand=opts.allow_on_demand,
                       catalog=catalog_mod.load(cfg.cost.prices_csv), cost=cfg.cost)
    state = LaunchState(name=cfg.name, job=str(Path(opts.job).resolve()), overrides=list(opts.overrides),
                        cluster=str(Path(opts.cluster).resolve()), backend="cloud" if spec.remote else "local",
                        provider=spec.provider, budget_usd=opts.budget_usd, keep=opts.keep,
                        pool=pools[0].node_type)
    return Plan(cfg, spec, pools, state, for_job(cfg)[1])


def _submittable(job: str) -> None:
    """What `submit` would refuse once the cluster is up, refused before: the job file outside the
    uploaded directory, a secret written into the runtime env."""
    from vlv_ray.train.submit import runtime_env

    try:
        Path(job).resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        raise ConfigError(f"{job}: must be inside the current directory ({Path.cwd()}), which is uploaded "
                          "as the job's working dir") from None
    runtime_env()


def estimate_usd(cfg: JobConfig, spec: ClusterSpec, pool: Pool, throughput: float | None) -> tuple[float | None, str]:
    """The cost model's figure for this job on `pool` (GPU nodes + head + storage): the one place
    launch calls vlv_ray/cost/estimate.py, so a change of the model changes only this."""
    from vlv_ray.cost import estimate

    cfg = replace(cfg, cost=replace(cfg.cost, region=cfg.cost.region or spec.region))
    cat = catalog_mod.load(cfg.cost.prices_csv)
    try:
        m = estimate.in_market(cfg, cat, throughput=throughput, instance=pool.instance_type, market=pool.market)
    except CatalogError as err:
        return None, f"estimate: unavailable ({err})"
    if m is None or m.usd is None:
        return None, f"estimate: unavailable (no {pool.market} price for {pool.instance_type})"
    row, total = m.row, m.usd
    return total, (f"estimate: ${total:,.2f} for {row['nodes']} × {pool.instance_type} {pool.market}, "
                   f"{m.wall_hours:.1f} h (head ${row['head_usd']:,.2f} and storage ${row['storage_usd']:,.2f} "
                   f"included); {m.samples:,} samples at {row['samples_per_s_per_gpu']:.1f}/s per GPU "
                   f"({row['throughput_from']}{', estimated' if row['estimated'] else ''})")


def confirm(total: float | None, opts: LaunchOptions) -> None:
    if total is None or opts.budget_usd is None or total <= opts.budget_usd or opts.yes:
        return
    question = f"the estimate ${total:,.2f} is over the budget ${opts.budget_usd:,.2f}"
    if sys.stdin.isatty():
        if input(f"[launch] {question}: launch anyway? [y/N] ").strip().lower() in ("y", "yes"):
            return
        raise ConfigError(f"budget_usd: {question}; not launched")
    raise ConfigError(f"budget_usd: {question}; pass yes=True to launch anyway")


def job_overrides(plan: Plan, opts: LaunchOptions, budget_left: float | None) -> list[str]:
    """The user's overrides, local paths made absolute (a local cluster's driver runs in a copy of
    the working dir), and the budget that is left for the job's own guard (checkpoint, stop)."""
    out = list(opts.overrides)
    if not plan.spec.remote:
        cfg = plan.cfg
        out += [f"storage_path={absolutize(cfg.storage_path)}", f"data.uri={absolutize(cfg.data.uri)}"]
        if cfg.model.stage1:
            out.append(f"model.stage1={absolutize(cfg.model.stage1)}")
    if budget_left is not None:
        out.append(f"cost.budget_usd={budget_left:.6f}")
    return out


def dry_run(plan: Plan, opts: LaunchOptions) -> int:
    be = backends.for_state(plan.state)
    print(f"[launch] dry run: nothing is started. {plan.state.name} on {plan.spec.provider} "
          f"({plan.state.backend} backend) would run:")
    for c in be.commands():
        print(f"  {c}")
    budget = "cost.budget_usd=<budget minus what the cluster has spent>" if opts.budget_usd else ""
    args = " ".join([*job_overrides(plan, opts, None), budget]).strip()
    print(f"  vlv-ray submit {opts.job} --address <dashboard> {args}".rstrip())
    print("[launch] worker pools, in the order capacity fallback tries them: "
          + ", then ".join(p.describe() for p in plan.pools))
    print(f"[launch] rendered cluster file ({be.file}; not written by a dry run):")
    print("--- rendered cluster file")
    print(dump(plan.spec.with_pool(plan.pools[0].node_type)), end="")
    return 0


def launch(opts: LaunchOptions) -> int:
    plan = prepare(opts)
    name = plan.state.name
    lock = Lock(name)
    try:
        old = LaunchState.load(name)
        attach = False
        if old is not None and old.status != "down":
            if old.fingerprint() == plan.state.fingerprint() and backends.for_state(old).is_up():
                attach = True
            else:
                backends.check_up_ok(old)  # a different launch still up: one line, exit 2
        total, text = estimate_usd(plan.cfg, plan.spec, plan.pools[0], opts.throughput)
        print(f"[launch] {text}", flush=True)
        if opts.dry_run:
            if total is not None and opts.budget_usd is not None and total > opts.budget_usd and not opts.yes:
                print(f"[launch] the estimate is over the budget ${opts.budget_usd:,.2f}: launch would stop "
                      "here unless confirmed (or --yes)")
            return dry_run(plan, opts)
        if attach:
            old.keep, old.budget_usd = opts.keep, opts.budget_usd if opts.budget_usd is not None else old.budget_usd
            plan.state = old
            print(f"[launch] re-attaching to {name}: cluster up since "
                  f"{time.strftime('%H:%M:%S', time.localtime(old.up_started_at or old.created_at))}"
                  f"{f', job {old.job_id}' if old.job_id else ''}; no second cluster is started", flush=True)
        else:
            confirm(total, opts)
            for suffix in (".ledger.json", ".log"):  # a new launch of a name that was down: its own figures
                plan.state.sibling(suffix).unlink(missing_ok=True)
        return _drive(plan, opts, attach)
    finally:
        lock.release()


def _drive(plan: Plan, opts: LaunchOptions, attach: bool) -> int:
    state, be = plan.state, backends.for_state(plan.state)
    cost = replace(plan.cfg.cost, region=plan.cfg.cost.region or plan.spec.region)  # price nodes where they run
    watch = ClusterWatch(state, plan.pools, cost, plan.cfg.stage, opts.capacity_wait_s)
    ended = "interrupted"
    previous = _stop_signals()
    try:
        if not attach:
            state.up_started_at = state.pool_since = time.time()
            state.save()
            print(f"[launch] starting {state.name} ({state.backend}, {state.provider}) with workers from "
                  f"{plan.pools[0].describe()}", flush=True)
            be.up(plan.spec.with_pool(state.pool))
        wait_dashboard(state.dashboard)
        from vlv_ray.train import auth

        auth.use_token_if_available()  # the cluster's token (~/.ray/auth_token): our clients send it
        state.status = "running" if state.job_id else "up"
        state.save()
        follower = Follower(plan, opts, be, watch)
        if state.job_id is None:
            left = follower.budget_left()
            if left is not None and left <= 0:
                ended = "budget"
                raise _Ended()
            follower.submit(job_overrides(plan, opts, left))
        ended = follower.follow(attached=attach)
    except _Ended:
        pass
    except KeyboardInterrupt:
        ended = "interrupted"
        print("\n[launch] interrupted: stopping the job, then tearing the cluster down"
              + (" (--keep: it stays up)" if state.keep else ""), flush=True)
        _stop_job(state)
    except Exception:  # the launcher's own failure: the job goes with the cluster, then the error shows
        ended = "failed"
        _stop_job(state)
        raise
    finally:
        with _stop_signals_ignored():  # copying the exports and the teardown are not to be cut short
            state.ended = ended
            state.save()
            _end(plan, be, watch, ended)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return EXIT.get(ended, 1)


class _Ended(Exception):
    pass


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@contextlib.contextmanager
def _stop_signals_ignored() -> Iterator[None]:
    """A half-done teardown is the expensive outcome (a cluster billing with nobody watching it):
    while exports are copied and the cluster goes down, Ctrl-C, `kill` and a closed terminal wait."""
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _stop_signals() -> dict:
    """Ctrl-C, `kill` and a closed terminal all stop the job and tear the cluster down; returns the
    handlers to put back. SIGINT is taken even where it was inherited ignored (a launcher started
    with `&` from a script: Python then raises no KeyboardInterrupt, and a `kill -INT` used to
    leave the job and the cluster running); SIGHUP is left ignored under `nohup`, which asks for it."""
    previous = {signal.SIGINT: signal.signal(signal.SIGINT, _raise_interrupt),
                signal.SIGTERM: signal.signal(signal.SIGTERM, _raise_interrupt)}
    if signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:
        previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, _raise_interrupt)
    return previous


STOP_JOB_WAIT_S = 60.0  # then the teardown goes ahead: it ends the job with the cluster
STOP_CALL_TIMEOUT_S = 10.0


def _stop_job(state: LaunchState) -> None:
    """Ask the job to stop (its driver checkpoints every rank) and wait for it a bounded time: each
    call to the head at most STOP_CALL_TIMEOUT_S, the whole at most STOP_JOB_WAIT_S plus one call."""
    if not state.job_id or not state.dashboard:
        return
    from vlv_ray.launch.watch import dashboard_json

    deadline = time.time() + STOP_JOB_WAIT_S
    job = f"/api/jobs/{state.job_id}"
    try:
        dashboard_json(state.dashboard, f"{job}/stop", method="POST", timeout=STOP_CALL_TIMEOUT_S)
        status = dashboard_json(state.dashboard, job, timeout=STOP_CALL_TIMEOUT_S).get("status")
        while time.time() < deadline and status not in ("STOPPED", "FAILED", "SUCCEEDED"):
            time.sleep(1)
            status = dashboard_json(state.dashboard, job, timeout=STOP_CALL_TIMEOUT_S).get("status")
        state.job_status = status
        state.save()
    except Exception as e:  # noqa: BLE001 (the teardown that follows matters more)
        print(f"[launch] could not stop job {state.job_id}: {e}", flush=True)


def copy_exports(cfg: JobConfig, paths: RunPaths) -> str | None:
    """<run>/export/ → launch.export_to, before the cluster (and anything local to it) goes."""
    import pyarrow.fs as pafs

    if not cfg.launch.export_to:
        return None
    src_fs, src = storage.resolve(paths.exports, **paths.storage)
    if src_fs.get_file_info(src).type == pafs.FileType.NotFound:
        return f"no exports to copy: {paths.exports} does not exist"
    dst_fs, dst = storage.resolve(cfg.launch.export_to, **paths.storage)
    dst_fs.create_dir(dst, recursive=True)
    pafs.copy_files(src, dst, source_filesystem=src_fs, destination_filesystem=dst_fs)
    return f"exports copied: {paths.exports} → {cfg.launch.export_to}"


def _end(plan: Plan, be, watch: ClusterWatch, ended: str) -> None:
    state = plan.state
    try:
        line = copy_exports(plan.cfg, plan.paths)
        if line:
            print(f"[launch] {line}", flush=True)
    except Exception as e:  # noqa: BLE001 (never skip the teardown for this)
        print(f"[launch] could not copy the exports: {storage.redact(str(e))}", flush=True)
    if state.keep:
        print(f"[launch] {state.name}: job {ended}; the cluster stays up (--keep): "
              f"`vlv-ray launch --down {state.name}` when done; it bills until then", flush=True)
        return
    teardown(state, be, watch)


def teardown(state: LaunchState, be, watch: ClusterWatch | None) -> None:
    """Down the cluster; Ctrl-C, `kill` and a closed terminal wait until it is down."""
    with _stop_signals_ignored():
        print(f"[launch] tearing down {state.name} (Ctrl-C and kill wait until it is down)", flush=True)
        state.status = "tearing-down"
        state.save()
        if watch is not None and state.dashboard:
            try:
                watch.poll()
            except Exception:  # noqa: BLE001 (a head that is already gone: its last poll stands)
                pass
        be.down()
        state.down_at, state.status = time.time(), "down"
        state.save()
        if watch is not None:
            total = watch.finish(state.down_at)
            print(f"[launch] {state.name} is down; the cluster cost ${total:.4f} from `up` to teardown "
                  f"(ledger: {state.sibling('.ledger.json')})", flush=True)


def status_rows() -> list[dict]:
    """Every launch this user made that is not torn down, and the last few that are."""
    from vlv_ray.launch.state import all_states

    rows = []
    for st in all_states():
        up = st.status != "down" and backends.for_state(st).is_up()
        ledger = st.sibling(".ledger.json")
        usd = None
        if ledger.is_file():
            import json

            usd = json.loads(ledger.read_text()).get("total_usd")
        rows.append({"name": st.name, "up": up, "status": st.status if up or st.status == "down" else "gone",
                     "provider": st.provider, "job_id": st.job_id, "job_status": st.job_status, "ended": st.ended,
                     "pool": st.pool, "switches": len(st.switches), "usd": usd, "budget_usd": st.budget_usd,
                     "since": st.up_started_at or st.created_at})
    return rows


def format_status(rows: list[dict]) -> str:
    if not rows:
        return "no launches (vlv-ray launch JOB.yaml --cluster FILE starts one)"
    head = f"{'name':<20} {'state':<13} {'provider':<15} {'since':<9} {'job':<28} {'pool':<22} {'$':>9} {'budget':>8}"
    lines = [head]
    for r in rows:
        job = f"{r['job_id'] or '-'} {r['job_status'] or ''}".strip()
        usd = f"{r['usd']:.4f}" if r["usd"] is not None else "-"
        budget = f"{r['budget_usd']:.2f}" if r["budget_usd"] else "-"
        lines.append(f"{r['name']:<20} {r['status']:<13} {r['provider']:<15} "
                     f"{time.strftime('%H:%M:%S', time.localtime(r['since'])):<9} {job:<28} {r['pool'] or '-':<22} "
                     f"{usd:>9} {budget:>8}")
    return "\n".join(lines)


def down(name: str) -> int:
    """Tear down a launch's cluster (a --keep one, or one whose launcher died)."""
    from vlv_ray.config import CostConfig

    state = LaunchState.load(name)
    if state is None:
        raise ConfigError(f"name: {name}: no such launch (`vlv-ray launch --status` lists them)")
    lock = Lock(name)
    try:
        be = backends.for_state(state)
        if state.status == "down" or not be.is_up():
            state.status = "down"
            state.save()
            print(f"[launch] {name} is not up; nothing to tear down")
            return 0
        try:
            cfg = load_job(state.job, state.overrides)
            cost, stage = cfg.cost, cfg.stage
        except ConfigError:
            cfg, cost, stage = None, CostConfig(), 1
        watch = ClusterWatch(state, [], cost, stage, 0.0) if state.dashboard else None
        if watch is not None:
            from vlv_ray.train import auth

            auth.use_token_if_available()
        _stop_job(state)
        if cfg is not None:
            line = copy_exports(cfg, for_job(cfg)[1])
            if line:
                print(f"[launch] {line}", flush=True)
        teardown(state, be, watch)
        return 0
    finally:
        lock.release()
