"""`vlv-ray caption` and `vlv-ray reconstruct`: run an export on images (vlv_ray/infer)."""
from __future__ import annotations

import json

from vlv_ray.cli.common import UserError, in_flags, storage_args, storage_kw


def add_parsers(sub) -> None:
    add_caption_parser(sub)
    add_reconstruct_parser(sub)


def add_caption_parser(sub) -> None:
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
    storage_args(cap)
    cap.set_defaults(fn=cmd_caption)


def cmd_caption(args) -> int:
    from vlv_ray.infer.caption import caption

    try:
        with in_flags(beams="--beams", max_new_tokens="--max-new-tokens"):
            records = caption(args.ckpt, args.images, out=args.out, beams=args.beams,
                              max_new_tokens=args.max_new_tokens, sample=args.sample, temperature=args.temperature,
                              top_p=args.top_p, seed=args.seed, batch_size=args.batch_size, **storage_kw(args))
    except ValueError as e:  # a bad option the generation itself rejects
        raise UserError(str(e)) from None
    if args.out:
        print(f"wrote {len(records)} captions to {args.out}")
    else:
        for r in records:
            print(json.dumps(r, ensure_ascii=False))
    return 0


def add_reconstruct_parser(sub) -> None:
    rec = sub.add_parser("reconstruct", help="images → stage-1 caption embeddings → Stable Diffusion → a grid")
    rec.add_argument("ckpt", help="a stage-1 export (or the run directory holding export/stage1)")
    rec.add_argument("images", nargs="+", help="image files, folders, or storage URIs of either")
    rec.add_argument("--out", default="reconstructions.png", help="the grid: originals beside reconstructions")
    rec.add_argument("--steps", type=int, default=50)
    rec.add_argument("--guidance", type=float, default=2.0, help="classifier-free guidance scale (paper: 2.0)")
    rec.add_argument("--seed", type=int, default=0)
    rec.add_argument("--scheduler", default=None, help="a diffusers scheduler class name (default DDIMScheduler)")
    rec.add_argument("--batch-size", type=int, default=8)
    storage_args(rec)
    rec.set_defaults(fn=cmd_reconstruct)


def cmd_reconstruct(args) -> int:
    from vlv_ray.infer.reconstruct import reconstruct

    try:
        with in_flags(steps="--steps"):
            r = reconstruct(args.ckpt, args.images, out=args.out, steps=args.steps, guidance=args.guidance,
                            seed=args.seed, scheduler=args.scheduler, batch_size=args.batch_size, **storage_kw(args))
    except ValueError as e:  # a bad --scheduler
        raise UserError(str(e)) from None
    print(f"wrote {r['out']}: {r['images']} images, originals beside reconstructions "
          f"({r['scheduler']}, {r['steps']} steps, guidance {r['guidance']}, seed {r['seed']}; "
          f"model at step {r['step']})")
    return 0
