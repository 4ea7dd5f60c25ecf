"""The `vlv-ray` command. Thin: parse arguments, call the modules, print results.

Bad input (a missing file, malformed YAML, an invalid key, an empty image folder) ends
with one line on stderr naming the problem and exit status 2; anything else is a bug
and keeps its traceback.
"""
from __future__ import annotations

import argparse
import errno
import json
import os
import sys
import time
from pathlib import Path

from vlv_ray.config import ConfigError, dump_yaml, load_job

_PATH_ERRNOS = (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EISDIR, errno.ENOSPC, errno.EDQUOT)
# The example job files, shipped as package data (vlv_ray/jobs links to the checkout's jobs/),
# so `demo` works from any install and any directory.
PACKAGED_JOBS = Path(__file__).resolve().parent / "jobs"


class UserError(Exception):
    """An error whose message is the whole story for the user."""


def _user_errors() -> tuple[type[BaseException], ...]:
    from vlv_ray.cost.catalog import CatalogError
    from vlv_ray.data.shards import DataError
    from vlv_ray.models.export import ExportError
    from vlv_ray.storage import StorageError

    return (UserError, ConfigError, CatalogError, DataError, StorageError, ExportError, FileNotFoundError)


# ---------------------------------------------------------------------------- commands


def cmd_config_show(args) -> int:
    cfg = load_job(args.job, args.overrides)
    if not args.params:
        print(json.dumps(cfg.to_dict(redact=True)) if args.json else dump_yaml(cfg), end="\n" if args.json else "")
        return 0
    from vlv_ray.models.presets import ModelBuildError, format_param_counts, param_counts

    start = time.perf_counter()
    try:  # configs alone, on the meta device: no weights, no download
        counts = param_counts(cfg)
    except ModelBuildError as e:
        raise UserError(str(e)) from None
    seconds = round(time.perf_counter() - start, 2)
    if args.json:
        print(json.dumps({"job": cfg.name, "stage": cfg.stage, "preset": cfg.model.preset, **counts,
                          "build_seconds": seconds}))
        return 0
    print(f"{cfg.name}: stage {cfg.stage}, preset {cfg.model.preset}; parameters from configs alone "
          f"(built on the meta device in {seconds:.1f}s)")
    for model, source in counts["configs"].items():
        print(f"  {model}: {source}")
    print(format_param_counts(counts))
    return 0


def cmd_config_check(args) -> int:
    failed = 0
    for job in args.jobs:
        try:
            load_job(job)
            print(f"ok: {job}")
        except ConfigError as e:
            print(f"vlv-ray: error: {e}", file=sys.stderr)
            failed += 1
    return 2 if failed else 0


def cmd_data_prepare(args) -> int:
    from vlv_ray import storage
    from vlv_ray.data import shards

    m = shards.prepare(args.src, args.dest, shard_rows=args.shard_rows, shard_bytes=int(args.shard_mb * (1 << 20)),
                       row_group_rows=args.row_group_rows, min_side=args.min_side, max_aspect=args.max_aspect,
                       max_short_side=args.max_short_side, captions=args.captions, image_column=args.image_column,
                       key_column=args.key_column, caption_column=args.caption_column, overwrite=args.overwrite,
                       endpoint_url=args.endpoint_url, region=args.region)
    print(f"wrote {m['rows']} rows in {len(m['shards'])} shards to {args.dest}")
    print(f"rows with a caption: {m.get('captioned', 0)} of {m['rows']} "
          f"(captions from {m.get('captions_from') or 'nowhere: a folder of images carries none; use --captions'})")
    rejected = sum(m.get("rejected", {}).values())
    where = "; keys and reasons in " + ", ".join(storage.join(args.dest, p) for p in m["rejects"]) if m.get("rejects") else ""
    print(f"rejected: {rejected} ({shards.fmt_counts(m.get('rejected', {}))}){where}")
    return 0


def cmd_data_inspect(args) -> int:
    from vlv_ray.data import shards

    report = shards.inspect(args.uri, endpoint_url=args.endpoint_url, region=args.region)
    print(json.dumps(report, indent=1) if args.json else shards.format_inspect(report))
    return 0 if report["integrity"]["ok"] else 1  # scripts must not take a damaged dataset for a good one


def cmd_data_latents(args) -> int:
    from vlv_ray.data import latents
    from vlv_ray.train.launch import ensure_ray

    if args.resolution < 8 or args.resolution % 8:
        raise UserError(f"--resolution: got {args.resolution}, expected a positive multiple of 8")
    ensure_ray()
    e = latents.build(args.uri, args.model, resolution=args.resolution, dtype=args.dtype, batch_size=args.batch_size,
                      actors=args.actors, endpoint_url=args.endpoint_url, region=args.region)
    rows = sum(f["rows"] for f in e["files"])
    print(f"cached {rows - e['empty']} latents ({e['dtype']}, {e['shape']}) in {args.uri}/{e['dir']} "
          f"({e['empty']} undecodable rows left empty); VAE {e['vae_sha256']}")
    return 0


def cmd_caption(args) -> int:
    from vlv_ray.infer.caption import caption

    try:
        records = caption(args.ckpt, args.images, out=args.out, beams=args.beams, max_new_tokens=args.max_new_tokens,
                          sample=args.sample, temperature=args.temperature, top_p=args.top_p, seed=args.seed,
                          batch_size=args.batch_size, endpoint_url=args.endpoint_url, region=args.region)
    except ValueError as e:  # a bad --beams or --max-new-tokens
        raise UserError(str(e)) from None
    if args.out:
        print(f"wrote {len(records)} captions to {args.out}")
    else:
        for r in records:
            print(json.dumps(r, ensure_ascii=False))
    return 0


def _storage_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--endpoint-url", default=None, help="S3-compatible endpoint (else AWS_ENDPOINT_URL)")
    p.add_argument("--region", default=None, help="S3 region (else AWS_DEFAULT_REGION)")


def cmd_reconstruct(args) -> int:
    from vlv_ray.infer.reconstruct import reconstruct

    try:
        r = reconstruct(args.ckpt, args.images, out=args.out, steps=args.steps, guidance=args.guidance,
                        seed=args.seed, scheduler=args.scheduler, batch_size=args.batch_size,
                        endpoint_url=args.endpoint_url, region=args.region)
    except ValueError as e:  # a bad --steps or --scheduler
        raise UserError(str(e)) from None
    print(f"wrote {r['out']}: {r['images']} images, originals beside reconstructions "
          f"({r['scheduler']}, {r['steps']} steps, guidance {r['guidance']}, seed {r['seed']}; "
          f"model at step {r['step']})")
    return 0


def cmd_train(args) -> int:
    from vlv_ray.train import launch

    cfg = load_job(args.job, args.overrides)
    result = launch.run(cfg, local=args.local, allow_changes=args.allow_changes)
    return _report_result(result, cfg)


def cmd_submit(args) -> int:
    from vlv_ray.train.submit import submit

    _, status = submit(args.job, address=args.address, overrides=args.overrides, wait=args.wait,
                       forward_secrets=args.forward_secrets, agent_wait_s=args.agent_wait)
    return 0 if status in (None, "SUCCEEDED") else 1


def cmd_demo(args) -> int:
    """The whole method in the miniature world on a local Ray cluster (vlv_ray/toyworld/demo.py)."""
    from vlv_ray.toyworld import demo

    metrics = demo.run(args.workdir, images=args.images, stage1_overrides=args.overrides,
                       stage1_only=args.stage1_only)
    if args.json:
        import ray

        ray.shutdown()  # flush Ray's forwarded worker logs first, so the JSON line is the last one
        print(json.dumps(metrics))
    return 0


def cmd_sweep(args) -> int:
    """The data-volume experiment / query-count ablation as Ray Tune trials (vlv_ray/toyworld/sweep.py)."""
    from vlv_ray.config import load_sweep
    from vlv_ray.toyworld import sweep

    images, queries = sweep.parse_counts("--images", args.images), sweep.parse_counts("--queries", args.queries)
    spec = load_sweep(args.job, images=images, queries=queries)
    stages = sweep.stages_of(spec, Path(args.job), queries_key="--queries" if queries else "queries")
    rows = sweep.run(args.job, spec, stages, workdir=args.workdir)
    if args.json:
        import ray

        ray.shutdown()  # flush Ray's forwarded worker logs first, so the JSON line is the last one
        print(json.dumps(rows))
    return 0 if all(r["status"] == "ok" for r in rows) else 1


def cmd_cost_estimate(args) -> int:
    from vlv_ray.cost import catalog, estimate

    cfg = load_job(args.job, args.overrides)
    if args.throughput is not None and args.throughput <= 0:
        raise UserError(f"--throughput: got {args.throughput}, expected samples/s per GPU > 0")
    cat = catalog.load(args.prices or cfg.cost.prices_csv)
    e = estimate.estimate(cfg, cat, throughput=args.throughput, instance=args.instance,
                          **({"results": Path(args.results)} if args.results else {}))
    print(json.dumps(e, indent=1) if args.json else estimate.format_estimate(e))
    return 0


def cmd_cost_prices(args) -> int:
    from vlv_ray.cost import catalog, hardware

    cat = catalog.load(args.sources or None, replace_clouds=args.replace)
    for spec in args.source or []:
        cloud, _, pairs = spec.partition(":")
        try:
            catalog.with_source(cat, cloud, **dict(kv.split("=", 1) for kv in pairs.split(",") if kv))
        except ValueError:
            raise UserError(f"--source: got {spec!r}, expected CLOUD:repo=R,path=P,commit=C,date=YYYY-MM-DD") from None
    if args.save:
        catalog.write_snapshot(cat.rows, cat.meta, catalog.SNAPSHOT)
    summary = {}
    for cloud in sorted({p.cloud for p in cat.rows} | set(cat.meta)):
        rows = [p for p in cat.rows if p.cloud == cloud]
        shapes = {p.instance_type: {"gpu_model": p.gpu_model, "gpus": p.gpus, "gpu_memory_gib": p.gpu_memory_gib,
                                    "vcpus": p.vcpus, "memory_gib": p.memory_gib,
                                    "network": (hardware.network_gbps(p.instance_type) or (None, "unknown"))[1]}
                  for p in rows}
        summary[cloud] = {**cat.meta.get(cloud, {"repo": "(user rows)"}), "regions": sorted({p.region for p in rows}),
                          "instance_types": sorted(shapes), "instances": shapes, "rows": len(rows)}
    if args.json:
        print(json.dumps({"snapshot": str(catalog.SNAPSHOT), "saved": args.save, "clouds": summary}, indent=1))
        return 0
    print(f"price snapshot {catalog.SNAPSHOT}{' (saved)' if args.save else ''}"
          f"{' + ' + ', '.join(args.sources) if args.sources else ''}")
    for cloud, s in summary.items():
        print(f"  {cloud}: {s.get('repo', '?')} {s.get('path', '')} @ {s.get('commit', '?')[:12]} "
              f"({s.get('date', '?')}): "
              f"{s['rows']} rows, {len(s['instance_types'])} instance types, {len(s['regions'])} regions")
        print(f"    regions: {', '.join(s['regions'])}")
    return 0


def cmd_cost_plan(args) -> int:
    from vlv_ray.cost import catalog, plan

    cfgs = [(job, load_job(job, [])) for job in args.jobs]
    clouds = [c.strip() for c in args.clouds.split(",") if c.strip()] if args.clouds else None
    if args.max_gpus is not None and args.max_gpus < 1:
        raise UserError(f"--max-gpus: got {args.max_gpus}, expected a GPU count >= 1")
    for flag, value in (("--budget", args.budget), ("--target", args.target)):
        if value is not None and value <= 0:
            raise UserError(f"{flag}: got {value}, expected dollars > 0")
    cat = catalog.load(args.prices or cfgs[0][1].cost.prices_csv)
    try:
        out = plan.plan(cfgs, cat, clouds=clouds, max_gpus=args.max_gpus, budget=args.budget, target=args.target,
                        **({"results": Path(args.results)} if args.results else {}))
    except plan.PlanError as e:
        msg = str(e)
        for key, flag in (("clouds:", "--clouds:"), ("budget:", "--budget:")):
            msg = flag + msg[len(key):] if msg.startswith(key) else msg
        raise UserError(msg) from None
    if args.write_cluster:
        cfg = plan.write_cluster(out["rows"][0], cat, Path(args.write_cluster))
        plan.validate(cfg)
        out["cluster_file"] = args.write_cluster
    print(json.dumps(out, indent=1) if args.json else plan.format_plan(out))
    if args.write_cluster and not args.json:
        print(f"wrote {args.write_cluster} for row 1 (validated against Ray's cluster schema)")
    return 0


def cmd_cost_report(args) -> int:
    from vlv_ray import storage
    from vlv_ray.cost.ledger import Ledger, format_report, ledger_uri

    kw = {"endpoint_url": args.endpoint_url, "region": args.region}
    if not storage.exists(ledger_uri(args.run_uri), **kw):
        raise UserError(f"{args.run_uri}: no cost ledger at {ledger_uri(args.run_uri)} (a run directory: "
                        "<storage_path>/<name>)")
    led = Ledger.load(args.run_uri, args.run_uri, **kw)
    print(json.dumps(led.to_json(), indent=1) if args.json else format_report(led))
    return 0


def _report_result(result, cfg) -> int:
    if result.error:
        from vlv_ray.train.failure import describe
        from vlv_ray.train.launch import run_dir

        line = describe(result.error, run_dir(cfg), endpoint_url=cfg.storage.endpoint_url, region=cfg.storage.region)
        print(f"vlv-ray: error: training failed: {line}", file=sys.stderr)
        return 1
    m = result.metrics or {}
    ckpt = result.checkpoint.path if result.checkpoint else "none"
    if m:
        print(f"done: step {m.get('step')} loss {m.get('loss', float('nan')):.4f}; checkpoint: {ckpt}")
    else:
        print(f"done: nothing to do (already complete); checkpoint: {ckpt}")
    return 0


# ---------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vlv-ray", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser("demo", help="the miniature world: stage 1 → stage 2 → captions, reconstructions, metrics")
    demo.add_argument("--workdir", default="vlv-demo", help="where images, shards and runs go (default: %(default)s)")
    demo.add_argument("--images", type=int, default=6000, help="stage-1 images; 10%% of them get captions for "
                      "stage 2 (default: %(default)s)")
    demo.add_argument("--json", action="store_true", help="end with the metrics as one JSON line")
    demo.add_argument("--stage1-only", action="store_true", help="stop after stage 1 and its export (a quick check)")
    demo.add_argument("overrides", nargs="*", metavar="key=value", help="stage-1 job overrides, e.g. max_steps=20")
    demo.set_defaults(fn=cmd_demo)

    sweep = sub.add_parser("sweep", help="the data-volume experiment (and query-count ablation): one Ray Tune "
                           "trial per point, stage 1 then stage 2 → sweep.csv, sweep.md, sweep.png")
    sweep.add_argument("job", help="a sweep file, e.g. jobs/toy-sweep.yaml")
    sweep.add_argument("--images", default=None, metavar="N1,N2,…", help="stage-1 image counts (default: the file's)")
    sweep.add_argument("--queries", default=None, metavar="Q1,Q2,…",
                       help="model.num_queries per point (default: the file's; the toy world allows ≤ 16)")
    sweep.add_argument("--workdir", default="vlv-sweep", help="points, Tune's results and the report (default: "
                       "%(default)s)")
    sweep.add_argument("--json", action="store_true", help="end with the rows as one JSON line")
    sweep.set_defaults(fn=cmd_sweep)

    data = sub.add_parser("data", help="prepare and inspect sharded image datasets")
    dsub = data.add_subparsers(dest="data_command", required=True, metavar="SUBCOMMAND")
    prep = dsub.add_parser("prepare", help="images in SRC → parquet shards + manifest.json in DEST")
    prep.add_argument("src", help="a folder of images (jpg, jpeg, png, webp; recursive), of webdataset .tar "
                                   "shards or of parquet files with image bytes; or one .tar/.parquet; any storage URI")
    prep.add_argument("dest", help="a storage URI: local path, file://, s3://, gs://")
    prep.add_argument("--shard-mb", type=float, default=256.0,
                      help="close a shard when its image bytes reach this many MiB (default 256)")
    prep.add_argument("--shard-rows", type=int, default=None, help="also close a shard at N rows")
    prep.add_argument("--row-group-rows", type=int, default=256,
                      help="rows per parquet row group: the training reader's unit of reading and shuffling")
    prep.add_argument("--image-column", default=None, help="parquet sources: the image-bytes column "
                      "(default: the first of image, jpg, png, bytes, img; HF {bytes, path} structs work)")
    prep.add_argument("--key-column", default=None, help="parquet sources: the key column (default: key, else file/row)")
    prep.add_argument("--caption-column", default=None,
                      help="parquet sources: the caption column (default: the first of caption, text, TEXT, txt)")
    prep.add_argument("--min-side", type=int, default=0, help="reject images whose shorter side is below PX")
    prep.add_argument("--max-aspect", type=float, default=None, help="reject aspect ratios beyond R or 1/R")
    prep.add_argument("--captions", default=None, help="JSONL {key, caption} or CSV key,caption")
    prep.add_argument("--max-short-side", type=int, default=None, metavar="PX",
                      help="re-encode (JPEG) images whose shorter side exceeds PX to PX, once, so every epoch "
                           "decodes a small image; original sizes are kept in orig_width/orig_height")
    prep.add_argument("--overwrite", action="store_true",
                      help="replace a dataset in DEST that was prepared from another source")
    _storage_args(prep)
    prep.set_defaults(fn=cmd_data_prepare)
    insp = dsub.add_parser("inspect", help="shards, rows, bytes, rejects and integrity of a dataset")
    insp.add_argument("uri")
    insp.add_argument("--json", action="store_true")
    _storage_args(insp)
    insp.set_defaults(fn=cmd_data_inspect)
    lat = dsub.add_parser("latents", help="cache every image's VAE latent next to its shard (Ray Data actors)")
    lat.add_argument("uri", help="a prepared dataset (its manifest.json gains a `latents` entry)")
    lat.add_argument("--model", required=True, help="a Stable Diffusion directory (its vae/ is used)")
    lat.add_argument("--resolution", type=int, default=384, help="the training resolution (default 384)")
    lat.add_argument("--dtype", choices=["bf16", "fp16"], default="bf16")
    lat.add_argument("--batch-size", type=int, default=32)
    lat.add_argument("--actors", type=int, default=None, help="VAE actors (default: one per GPU, else 1)")
    _storage_args(lat)
    lat.set_defaults(fn=cmd_data_latents)

    cap = sub.add_parser("caption", help="images → a stage-2 captioner → captions (JSONL)")
    cap.add_argument("ckpt", help="a stage-2 export (or the run directory holding export/stage2)")
    cap.add_argument("images", nargs="+", help="image files, folders, or storage URIs of either")
    cap.add_argument("--out", default=None, help="write JSONL {image, caption} here (default: print)")
    cap.add_argument("--beams", type=int, default=4, help="beam search width; 1 = greedy (default 4)")
    cap.add_argument("--max-new-tokens", type=int, default=300)
    cap.add_argument("--sample", action="store_true", help="sample instead of searching")
    cap.add_argument("--temperature", type=float, default=1.0)
    cap.add_argument("--top-p", type=float, default=1.0)
    cap.add_argument("--seed", type=int, default=0)
    cap.add_argument("--batch-size", type=int, default=8)
    _storage_args(cap)
    cap.set_defaults(fn=cmd_caption)

    rec = sub.add_parser("reconstruct", help="images → stage-1 caption embeddings → Stable Diffusion → a grid")
    rec.add_argument("ckpt", help="a stage-1 export (or the run directory holding export/stage1)")
    rec.add_argument("images", nargs="+", help="image files, folders, or storage URIs of either")
    rec.add_argument("--out", default="reconstructions.png", help="the grid: originals beside reconstructions")
    rec.add_argument("--steps", type=int, default=50)
    rec.add_argument("--guidance", type=float, default=2.0, help="classifier-free guidance scale (paper: 2.0)")
    rec.add_argument("--seed", type=int, default=0)
    rec.add_argument("--scheduler", default=None, help="a diffusers scheduler class name (default DDIMScheduler)")
    rec.add_argument("--batch-size", type=int, default=8)
    _storage_args(rec)
    rec.set_defaults(fn=cmd_reconstruct)

    train = sub.add_parser("train", help="run (or resume) the job in JOB.yaml")
    train.add_argument("job", help="a job file, e.g. jobs/tiny.yaml")
    train.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides, e.g. optim.lr=1e-4")
    train.add_argument("--local", action="store_true",
                       help="debug: run the loop in this process (Ray Train local mode; checkpoints are not persisted)")
    train.add_argument("--allow-changes", action="store_true",
                       help="resume although settings differ from the checkpoint's (recorded in <run>/history.jsonl)")
    train.set_defaults(fn=cmd_train)

    subm = sub.add_parser("submit", help="submit JOB.yaml to a Ray cluster; the current directory is uploaded")
    subm.add_argument("job", help="a job file inside the current directory, e.g. jobs/stage1-paper.yaml")
    subm.add_argument("overrides", nargs="*", metavar="key=value")
    subm.add_argument("--address", default=None,
                      help="the cluster's dashboard, e.g. http://head:8265 (default: $RAY_API_SERVER_ADDRESS)")
    subm.add_argument("--wait", action="store_true", help="wait for the job to finish; exit 1 unless it succeeded")
    subm.add_argument("--agent-wait", type=float, default=90.0, metavar="SECONDS",
                      help="how long to retry while the head answers that its job agent is not up (default: 90)")
    subm.add_argument("--forward-secrets", action="store_true",
                      help="send AWS_* and WANDB_API_KEY from this shell to the job; Ray then shows them in "
                           "`ray job list`, its jobs API and the head's logs (default: the nodes' own credentials)")
    subm.set_defaults(fn=cmd_submit)

    cost = sub.add_parser("cost", help="estimate, plan or report a job's cost; show the price snapshot")
    cosub = cost.add_subparsers(dest="cost_command", required=True, metavar="SUBCOMMAND")
    est = cosub.add_parser("estimate", help="GPU-hours, wall time, on-demand and spot dollars of JOB.yaml")
    est.add_argument("job")
    est.add_argument("overrides", nargs="*", metavar="key=value")
    est.add_argument("--throughput", type=float, default=None,
                     help="samples/s per GPU (default: measured figures in benchmarks/results.json)")
    est.add_argument("--instance", default=None, help="instance type to price (default: cost.instance_type, "
                     "else the cheapest)")
    est.add_argument("--prices", default=None, help="a CSV extending/overriding the price catalog")
    est.add_argument("--results", default=None, help="benchmark results JSON (default: benchmarks/results.json)")
    est.add_argument("--json", action="store_true")
    est.set_defaults(fn=cmd_cost_estimate)
    rep = cosub.add_parser("report", help="a run's cost ledger: node type, market, node-hours, dollars")
    rep.add_argument("run_uri", help="the run directory: <storage_path>/<name>")
    rep.add_argument("--json", action="store_true")
    _storage_args(rep)
    rep.set_defaults(fn=cmd_cost_report)
    pri = cosub.add_parser("prices", help="the price snapshot in use (source, commit, date, regions); "
                           "--from reads SkyPilot vms.csv downloads or user rows")
    pri.add_argument("--from", dest="sources", action="append", metavar="CATALOG.csv",
                     help="a SkyPilot-format vms.csv or a user prices CSV; extends the snapshot (repeatable)")
    pri.add_argument("--replace", action="store_true", help="a --from file's clouds replace the snapshot's rows")
    pri.add_argument("--source", action="append", metavar="CLOUD:repo=R,path=P,commit=C,date=D",
                     help="record where a cloud's rows came from (written with --save)")
    pri.add_argument("--save", action="store_true", help="write the result as the new snapshot (vlv_ray/cost/snapshot.csv)")
    pri.add_argument("--json", action="store_true")
    pri.set_defaults(fn=cmd_cost_prices)
    pla = cosub.add_parser("plan", help="rank (cloud, region, instance type, market) by the jobs' total dollars")
    pla.add_argument("jobs", nargs="+", metavar="JOB.yaml")
    pla.add_argument("--budget", type=float, default=None, metavar="USD", help="only rows at or under this total")
    pla.add_argument("--clouds", default=None, help="comma-separated clouds to consider (default: all in the snapshot)")
    pla.add_argument("--target", type=float, default=None, metavar="USD",
                     help="project the throughput (and MFU) the cheapest rows need to cost at most USD")
    pla.add_argument("--max-gpus", type=int, default=None, metavar="N", help="at most N GPUs per job")
    pla.add_argument("--prices", default=None, help="a CSV extending/overriding the price snapshot")
    pla.add_argument("--results", default=None, help="benchmark results JSON (default: benchmarks/results.json)")
    pla.add_argument("--write-cluster", default=None, metavar="FILE", help="write a Ray cluster YAML for row 1")
    pla.add_argument("--json", action="store_true")
    pla.set_defaults(fn=cmd_cost_plan)

    from vlv_ray.eval.command import add_eval_parser

    add_eval_parser(sub)

    config = sub.add_parser("config", help="show or check job files")
    csub = config.add_subparsers(dest="config_command", required=True, metavar="SUBCOMMAND")
    show = csub.add_parser("show", help="print the resolved job (secrets redacted), or its models' parameter counts")
    show.add_argument("job")
    show.add_argument("overrides", nargs="*", metavar="key=value")
    show.add_argument("--params", action="store_true",
                      help="parameter counts (total, trainable) per module, built from configs alone: no weights")
    show.add_argument("--json", action="store_true", help="print one JSON object")
    show.set_defaults(fn=cmd_config_show)
    check = csub.add_parser("check", help="validate job files")
    check.add_argument("jobs", nargs="+")
    check.set_defaults(fn=cmd_config_check)
    return p


def main(argv: list[str] | None = None) -> int:
    from vlv_ray.train.failure import TrainingFailed

    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except _user_errors() as e:
        msg = str(e) if not isinstance(e, FileNotFoundError) else f"{e.filename}: no such file or directory"
        print(f"vlv-ray: error: {msg.splitlines()[0] if msg else type(e).__name__}", file=sys.stderr)
        return 2
    except TrainingFailed as e:  # not bad input: exit 1, but one line all the same
        print(f"vlv-ray: error: training failed: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        # A path the user named that cannot be written or read as asked (read-only, not a
        # directory, no space): theirs to fix. Other OS errors keep their traceback.
        if e.filename is None or e.errno not in _PATH_ERRNOS:
            raise
        print(f"vlv-ray: error: {e.filename}: {e.strerror or os.strerror(e.errno)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("vlv-ray: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
