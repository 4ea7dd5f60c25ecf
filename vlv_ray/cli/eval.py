"""`vlv-ray eval recon|caption`: FID and CLIP scores of an export as a Ray job (vlv_ray/eval)."""
from __future__ import annotations

import argparse
import json

from vlv_ray.cli.common import UserError, command_group, storage_args, storage_kw


def add_parsers(sub) -> None:
    esub = command_group(sub, "eval", "FID and CLIP scores of a stage-1 or stage-2 export on held-out shards "
                         "(a Ray job: Ray Data + an actor pool)")
    rec = esub.add_parser("recon", help="reconstruction FID and CLIP image–image similarity (the paper's Tables "
                          "4, 5, 7): caption embeddings → the frozen decoder → images")
    rec.add_argument("--stage1", required=True, metavar="EXPORT", help="a stage-1 export (or its run directory)")
    cap = esub.add_parser("caption", help="CLIP text–image score of the captions; with --t2i, the paper's Table-1 "
                          "FID of the images a text-to-image model draws from them")
    cap.add_argument("--stage2", required=True, metavar="EXPORT", help="a stage-2 export (or its run directory)")
    cap.add_argument("--t2i", default=None, metavar="PIPELINE",
                     help="a diffusers text-to-image pipeline directory (e.g. SD 3.5 Medium, as in the paper)")
    cap.add_argument("--beams", type=int, default=4, help="caption beam width (default 4, the paper's)")
    cap.add_argument("--max-new-tokens", type=int, default=300)
    for p in (rec, cap):
        p.add_argument("--data", required=True, metavar="HELD_OUT", help="a prepared dataset (manifest.json + "
                       "shards) of held-out images, any storage URI")
        p.add_argument("--images", type=int, default=None, metavar="N",
                       help="the first N images of the held-out set (default: all; the paper: 30000)")
        p.add_argument("--guidance", default="2", metavar="G1,G2,…",
                       help="classifier-free guidance scales, one FID each (default 2, the paper's)")
        p.add_argument("--steps", type=int, default=50, help="sampling steps (default 50)")
        p.add_argument("--scheduler", default=None, help="a diffusers scheduler class (default DDIMScheduler; recon)")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--features", default="inception", metavar="MODULE",
                       help="the FID feature extractor: inception (torchmetrics; needs `pip install "
                            "'vlv-ray[eval]'`) or package.module:attribute naming an nn.Module")
        p.add_argument("--clip", default="openai/clip-vit-large-patch14", metavar="PATH",
                       help="a CLIP model directory or hub id for CLIP scores; 'none' for no CLIP score")
        p.add_argument("--batch-size", type=int, default=16)
        p.add_argument("--actors", type=int, default=None, help="generating actors (default: one per GPU, else 1)")
        p.add_argument("--grid-rows", type=int, default=8, help="images in grid.png (default 8)")
        p.add_argument("--out", default=None, metavar="DIR", help="write eval.json and grid.png here")
        p.add_argument("--json", action="store_true", help="print only the JSON line")
        storage_args(p)
        p.set_defaults(fn=cmd_eval)


def cmd_eval(args: argparse.Namespace) -> int:
    from vlv_ray.eval import features, job
    from vlv_ray.eval.clip import ClipError
    from vlv_ray.train.launch import ensure_ray

    for flag, value, least in (("--images", args.images, 2), ("--steps", args.steps, 1),
                               ("--batch-size", args.batch_size, 1), ("--actors", args.actors, 1),
                               ("--grid-rows", args.grid_rows, 0), ("--beams", getattr(args, "beams", 1), 1)):
        if value is not None and value < least:
            raise UserError(f"{flag}: got {value}, expected at least {least}")
    try:
        guidance = [float(g) for g in args.guidance.split(",")]
    except ValueError:
        guidance = []
    if not guidance or any(g <= 0 for g in guidance):
        raise UserError(f"--guidance: got {args.guidance!r}, expected comma-separated scales > 0, e.g. 1,2,3,4")
    recon = args.eval_command == "recon"
    spec = job.EvalSpec(
        kind=args.eval_command, export=args.stage1 if recon else args.stage2, data=args.data, images=args.images,
        guidance=guidance, steps=args.steps, scheduler=args.scheduler, seed=args.seed, features=args.features,
        clip=None if args.clip.lower() == "none" else args.clip, t2i=None if recon else args.t2i,
        beams=getattr(args, "beams", 4), max_new_tokens=getattr(args, "max_new_tokens", 300),
        batch_size=args.batch_size, actors=args.actors, grid_rows=args.grid_rows,
        storage_kw=storage_kw(args))
    try:
        job.check(spec)  # bad input is one line before Ray starts
        ensure_ray()
        summary = job.run(spec, out=args.out, progress=not args.json)
    except (features.FeatureError, ClipError) as e:
        raise UserError(f"--{str(e)}") from None
    if not args.json:
        for r in summary["results"]:
            p = r["protocol"]
            print(f"{r['metric']}: {r['value']:.4f} ({p['images']} images, guidance {p['guidance']}, "
                  f"{p['steps']} steps, seed {p['seed']}, features {p['features']})")
    print(json.dumps(summary))
    return 0
