"""`vlv-ray data prepare | inspect | latents`: sharded image datasets (vlv_ray/data)."""
from __future__ import annotations

import json

from vlv_ray.cli.common import UserError, command_group, in_flags, storage_args, storage_kw

# The arguments of `shards.prepare` that `data prepare` sets from flags of another spelling.
PREPARE_FLAGS = {name: "--" + name.replace("_", "-") for name in (
    "shard_rows", "row_group_rows", "min_side", "max_aspect", "max_short_side", "image_column", "key_column",
    "caption_column", "overwrite")}


def add_parsers(sub) -> None:
    dsub = command_group(sub, "data", help="prepare and inspect sharded image datasets")
    add_prepare_parser(dsub)
    add_inspect_parser(dsub)
    add_latents_parser(dsub)


def add_prepare_parser(dsub) -> None:
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
    storage_args(prep)
    prep.set_defaults(fn=cmd_data_prepare)


def cmd_data_prepare(args) -> int:
    from vlv_ray import storage
    from vlv_ray.data import shards

    if not args.shard_mb > 0:
        raise UserError(f"--shard-mb: got {args.shard_mb:g}, expected a size in MiB above 0")
    with in_flags(**PREPARE_FLAGS):
        m = shards.prepare(args.src, args.dest, shard_rows=args.shard_rows,
                           shard_bytes=max(1, int(args.shard_mb * (1 << 20))), row_group_rows=args.row_group_rows,
                           min_side=args.min_side, max_aspect=args.max_aspect, max_short_side=args.max_short_side,
                           captions=args.captions, image_column=args.image_column, key_column=args.key_column,
                           caption_column=args.caption_column, overwrite=args.overwrite, **storage_kw(args))
    print(f"wrote {m['rows']} rows in {len(m['shards'])} shards to {args.dest}")
    print(f"rows with a caption: {m.get('captioned', 0)} of {m['rows']} "
          f"(captions from {m.get('captions_from') or 'nowhere: a folder of images carries none; use --captions'})")
    rejected = sum(m.get("rejected", {}).values())
    where = "; keys and reasons in " + ", ".join(storage.join(args.dest, p) for p in m["rejects"]) if m.get("rejects") else ""
    print(f"rejected: {rejected} ({shards.fmt_counts(m.get('rejected', {}))}){where}")
    return 0


def add_inspect_parser(dsub) -> None:
    insp = dsub.add_parser("inspect", help="shards, rows, bytes, rejects and integrity of a dataset")
    insp.add_argument("uri")
    insp.add_argument("--json", action="store_true")
    storage_args(insp)
    insp.set_defaults(fn=cmd_data_inspect)


def cmd_data_inspect(args) -> int:
    from vlv_ray.data import shards

    report = shards.inspect(args.uri, **storage_kw(args))
    print(json.dumps(report, indent=1) if args.json else shards.format_inspect(report))
    return 0 if report["integrity"]["ok"] else 1  # scripts must not take a damaged dataset for a good one


def add_latents_parser(dsub) -> None:
    lat = dsub.add_parser("latents", help="cache every image's VAE latent next to its shard (Ray Data actors)")
    lat.add_argument("uri", help="a prepared dataset (its manifest.json gains a `latents` entry)")
    lat.add_argument("--model", required=True, help="a Stable Diffusion directory (its vae/ is used)")
    lat.add_argument("--resolution", type=int, default=384, help="the training resolution (default 384)")
    lat.add_argument("--dtype", choices=["bf16", "fp16"], default="bf16")
    lat.add_argument("--batch-size", type=int, default=32)
    lat.add_argument("--actors", type=int, default=None, help="VAE actors (default: one per GPU, else 1)")
    storage_args(lat)
    lat.set_defaults(fn=cmd_data_latents)


def cmd_data_latents(args) -> int:
    from vlv_ray.data import latents
    from vlv_ray.train.launch import ensure_ray

    if args.resolution < 8 or args.resolution % 8:
        raise UserError(f"--resolution: got {args.resolution}, expected a positive multiple of 8")
    ensure_ray()
    with in_flags(dtype="--dtype"):
        e = latents.build(args.uri, args.model, resolution=args.resolution, dtype=args.dtype,
                          batch_size=args.batch_size, actors=args.actors, **storage_kw(args))
    rows = sum(f["rows"] for f in e["files"])
    print(f"cached {rows - e['empty']} latents ({e['dtype']}, {e['shape']}) in {args.uri}/{e['dir']} "
          f"({e['empty']} undecodable rows left empty); VAE {e['vae_sha256']}")
    return 0
