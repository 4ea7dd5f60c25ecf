"""`vlv-ray eval recon|caption` as a Ray job: held-out shards → actors → statistics → eval.json.

    Ray Data: the held-out shards' row groups, in file order → read + decode on CPU tasks
    (data/pipeline.py, the training reader) → the first `images` rows → an actor pool (one GPU
    per actor when the cluster has GPUs) that loads the frozen models once and, per batch,
    generates (infer/reconstruct.py's CFG sampling, or infer/caption.py's captions and a
    text-to-image pipeline), extracts features and CLIP scores
    → the driver folds each batch into running FID statistics (fid.py) and drops it.

Memory on the driver is the statistics (two D×D sums per score) and the grid's first rows,
whatever the image count. Each batch's noise comes from (seed, the position of its first
row), so a result does not depend on which actor ran which batch.
"""
from __future__ import annotations

import io
import json
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vlv_ray import storage
from vlv_ray.data.shards import DataError
from vlv_ray.eval import clip as clip_scores
from vlv_ray.eval import features as feature_lib


@dataclass
class EvalSpec:
    """What to measure and how; everything a result's protocol states comes from here."""

    kind: str  # "recon" (a stage-1 export) or "caption" (a stage-2 export)
    export: str
    data: str
    images: int | None = None  # None: every image of the held-out set
    guidance: list[float] = field(default_factory=lambda: [2.0])  # the paper's tables: CFG 2
    steps: int = 50
    scheduler: str | None = None  # diffusers class name; None: DDIM
    seed: int = 0
    features: str = feature_lib.INCEPTION
    clip: str | None = clip_scores.DEFAULT  # None: no CLIP score
    t2i: str | None = None  # caption: a diffusers text-to-image pipeline for Table-1 FID
    beams: int = 4
    max_new_tokens: int = 300
    batch_size: int = 16
    actors: int | None = None  # None: one per GPU, else 1
    grid_rows: int = 8
    storage_kw: dict = field(default_factory=dict)


def check(spec: EvalSpec) -> tuple[str, dict]:
    """Cheap checks before Ray starts: (the resolved export, the held-out manifest)."""
    from vlv_ray.data import shards
    from vlv_ray.models import export

    kw = spec.storage_kw
    want = {"recon": "vlv-stage1", "caption": "vlv-stage2"}[spec.kind]
    uri = export.resolve(spec.export, **kw) if spec.kind == "recon" else export.resolve_any(spec.export, **kw)
    kind = storage.read_json(storage.join(uri, export.META_FILE), **kw).get("kind")
    if kind != want:
        raise export.ExportError(f"{uri}: a {kind!r} export, expected a {want} export for `eval {spec.kind}`")
    manifest = shards.load_manifest(spec.data, **kw)
    if spec.images is not None and manifest["rows"] < spec.images:
        raise DataError(f"{spec.data}: holds {manifest['rows']} images, fewer than the {spec.images} asked for")
    if spec.images is not None and spec.images < 2:
        raise DataError(f"images: got {spec.images}, expected at least 2 (FID needs two of each)")
    if not spec.guidance or any(g <= 0 for g in spec.guidance):
        raise ValueError(f"guidance: got {spec.guidance}, expected scales > 0, e.g. 1,2,3,4")
    if spec.t2i:
        check_pipeline(spec.t2i, **kw)
    feature_lib.load(spec.features)  # a bad extractor fails here, in one line, not on every actor
    return uri, manifest


def check_pipeline(path: str, **kw) -> str:
    """`path` is a diffusers pipeline directory: model_index.json naming a pipeline class."""
    import diffusers

    index = storage.join(path, "model_index.json")
    if not storage.exists(index, **kw):
        raise DataError(f"{path}: not a diffusers pipeline directory (no model_index.json)")
    try:
        name = storage.read_json(index, **kw).get("_class_name")
    except (storage.NotJSON, AttributeError):  # not JSON, or JSON that is not an object
        raise DataError(f"{index}: not a diffusers model index (expected a JSON object with _class_name)") from None
    cls = getattr(diffusers, str(name), None)
    if not (isinstance(cls, type) and issubclass(cls, diffusers.DiffusionPipeline)):
        raise DataError(f"{index}: _class_name {name!r} is not a diffusers pipeline class")
    return name


def held_out_items(manifest: dict) -> list[dict]:
    """Every row group of a held-out set in file order, as `pipeline.read_segments` takes them:
    the same images every time (rows within a group in the reader's fixed permutation)."""
    from vlv_ray.data import order

    items, pos = [], 0
    for i, b in enumerate(order.blocks_from_manifest(manifest)):
        items.append({"shard": b.shard, "group": b.group, "block": i, "rows": b.rows, "start": 0, "stop": b.rows,
                      "pos": pos})
        pos += b.rows
    return items


def _held_out(spec: EvalSpec, manifest: dict, resolution: int):
    """The first `images` decodable rows of the held-out set, through the training reader."""
    import ray.data

    from vlv_ray.data import pipeline

    fs, paths, _ = pipeline.shard_paths(spec.data, **spec.storage_kw)
    items = held_out_items(manifest)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # our own progress line carries the ETA
    ctx.execution_options.preserve_order = True
    ds = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
        pipeline.read_and_decode, batch_size=1, batch_format="numpy", num_cpus=1,
        fn_kwargs={"read": {"fs": fs, "paths": paths, "seed": spec.seed, "epoch": 0, "columns": ["key", "image"]},
                   "decode": {"resolution": resolution}})
    return ds.limit(spec.images) if spec.images else ds


class Evaluator:
    """A Ray Data actor: the frozen models, the extractor and CLIP loaded once, on its GPU if any."""

    def __init__(self, spec: EvalSpec, export_uri: str):
        import torch

        self.spec, self.torch = spec, torch
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.pipe = None
        self.extractor = feature_lib.load(spec.features).to(self.device)
        self.clip = clip_scores.ClipScorer(spec.clip, self.device) if spec.clip else None
        kw = spec.storage_kw
        from vlv_ray.models import export

        if spec.kind == "recon":
            from vlv_ray.infer.reconstruct import sd_tokenizer

            self.encoder, self.decoder, meta = export.load_stage1(export_uri, **kw)
            self.encoder.to(self.device)
            self.decoder.to(self.device)
            self.tokenizer = sd_tokenizer(meta.get("stable_diffusion"))
        else:
            self.model, meta = export.load_stage2(export_uri, **kw)
            self.model.to(self.device)
            if spec.t2i:
                from diffusers import DiffusionPipeline

                self.pipe = DiffusionPipeline.from_pretrained(spec.t2i).to(self.device)
                self.pipe.set_progress_bar_config(disable=True)
        self.resolution = meta["resolution"]

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self.torch
        images = torch.from_numpy(np.ascontiguousarray(batch["image"]))
        pos = np.asarray(batch["_pos"], dtype=np.int64)
        g = torch.Generator().manual_seed(self.spec.seed * 1_000_003 + int(pos[0]))
        out: dict[str, Any] = {"_pos": pos, "key": batch["key"], "png_real": _pngs(images.numpy(), pos,
                                                                                  self.spec.grid_rows)}
        if self.spec.kind == "recon" or self.pipe is not None:  # FID's real side
            out["real"] = self._features(images)
        if self.spec.kind == "recon":
            from vlv_ray.infer.reconstruct import reconstruct_batch

            for i, scale in enumerate(self.spec.guidance):
                fake = reconstruct_batch(self.encoder, self.decoder, images.to(self.device), tokenizer=self.tokenizer,
                                         steps=self.spec.steps, guidance=scale, scheduler=self.spec.scheduler,
                                         generator=g, resolution=self.resolution)
                self._generated(out, i, images, fake, pos)
                if self.clip:
                    out[f"clip{i}"] = np.full(len(pos), self.clip.score(images, _fit(fake, images.shape[1])))
            return out
        from vlv_ray.infer.caption import caption_batch

        captions = caption_batch(self.model, images.to(self.device), beams=self.spec.beams,
                                 max_new_tokens=self.spec.max_new_tokens)
        out["caption"] = np.asarray(captions, dtype=object)
        if self.clip:
            out["clip_text"] = np.full(len(pos), self.clip.score(captions, images))
        if self.pipe is not None:
            for i, scale in enumerate(self.spec.guidance):
                res = self.resolution
                arr = self.pipe(prompt=captions, num_inference_steps=self.spec.steps, guidance_scale=scale,
                                generator=g, output_type="np").images
                fake = torch.from_numpy((np.asarray(arr) * 255).round().clip(0, 255).astype(np.uint8))
                self._generated(out, i, images, _fit(fake, res), pos)
        return out

    def _features(self, images) -> np.ndarray:
        return feature_lib.extract(self.extractor, images, self.device).numpy()

    def _generated(self, out: dict, i: int, real, fake, pos: np.ndarray) -> None:
        fake = _fit(fake, real.shape[1])  # the VAE may decode at another size: compare like with like
        out[f"fake{i}"] = self._features(fake)
        out[f"png{i}"] = _pngs(fake.numpy(), pos, self.spec.grid_rows)


def _fit(images, res: int):
    """uint8 [B, h, w, 3] tensors at res × res (bicubic, PIL), unchanged when already so."""
    import torch

    from vlv_ray.grid import fit

    if images.shape[1:3] == (res, res):
        return images
    return torch.from_numpy(np.stack([fit(x, res) for x in images.numpy()]))


def _pngs(images: np.ndarray, pos: np.ndarray, rows: int) -> np.ndarray:
    """PNG bytes of the images the grid shows (the first `rows` of the set), b"" for the rest:
    only those few images travel back to the driver."""
    from PIL import Image

    out = np.full(len(pos), b"", dtype=object)
    for j in np.flatnonzero(pos < rows):
        buf = io.BytesIO()
        Image.fromarray(images[j]).save(buf, "PNG")
        out[j] = buf.getvalue()
    return out


def run(spec: EvalSpec, *, out: str | None = None, progress: bool = True) -> dict[str, Any]:
    """Evaluate on the connected Ray cluster; write `<out>/eval.json` and `<out>/grid.png`."""
    import ray

    export_uri, manifest = check(spec)
    kw = spec.storage_kw
    if out:
        storage.probe_writable(storage.join(out, "eval.json"), **kw)  # before the sampling, not after
    meta = storage.read_json(storage.join(export_uri, "vlv.json"), **kw)
    total = spec.images or manifest["rows"]
    gpus = int(ray.cluster_resources().get("GPU", 0))
    pool = spec.actors or max(1, gpus)
    ds = _held_out(spec, manifest, meta["resolution"]).map_batches(
        Evaluator, fn_constructor_args=(spec, export_uri), batch_size=spec.batch_size, batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=pool), num_gpus=1 if gpus else 0, num_cpus=0 if gpus else 1)

    totals, t0 = _Totals(spec), time.time()
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        totals.add(batch)
        if progress:
            rate = totals.done / max(time.time() - t0, 1e-6)
            print(f"[eval] {totals.done}/{total} images, {rate:.2f} img/s, ETA {(total - totals.done) / rate:.0f}s",
                  file=sys.stderr, flush=True)
    done = totals.done
    if done < 2:
        raise DataError(f"{spec.data}: only {done} images could be decoded; FID needs at least 2")
    seconds = time.time() - t0
    protocol = _protocol(spec, meta, export_uri, total, done, totals)
    summary = {"eval": spec.kind, "images": done, "results": totals.results(protocol), "seconds": round(seconds, 1),
               "images_per_s": round(done / max(seconds, 1e-6), 3), "samples": totals.samples}
    if out:
        summary["out"] = out
        if totals.grid:
            summary["grid"] = storage.join(out, "grid.png")
            storage.write_bytes_atomic(summary["grid"], _grid_png(totals.grid), **kw)
        storage.write_bytes_atomic(storage.join(out, "eval.json"), (json.dumps(summary, indent=1) + "\n").encode(),
                                   **kw)
    return summary


class _Totals:
    """What the evaluated batches add up to, reduced once in the driver: FID statistics per
    guidance scale, CLIP score sums, the grid's images (by position) and the first captions."""

    def __init__(self, spec: EvalSpec):
        self.spec = spec
        self.generated = spec.kind == "recon" or spec.t2i is not None
        self.fids: list = []
        self.clip_sums: dict[str, float] = {}
        self.grid: dict[int, list] = {}
        self.samples: list[dict] = []
        self.done = 0

    def add(self, batch: dict) -> None:
        from vlv_ray.eval.fid import FeatureFID

        spec = self.spec
        if self.generated:
            if not self.fids:
                self.fids = [FeatureFID(batch["real"].shape[1]) for _ in spec.guidance]
            for i, f in enumerate(self.fids):
                f.update(batch["real"], real=True)
                f.update(batch[f"fake{i}"], real=False)
        for k in [c for c in batch if c.startswith("clip")]:
            self.clip_sums[k] = self.clip_sums.get(k, 0.0) + float(np.sum(batch[k]))
        for j, p in enumerate(batch["_pos"]):
            if batch["png_real"][j]:
                self.grid[int(p)] = [batch["png_real"][j]] + [batch[f"png{i}"][j] for i in range(len(spec.guidance))
                                                              if f"png{i}" in batch]
            if "caption" in batch and len(self.samples) < spec.grid_rows:
                self.samples.append({"key": str(batch["key"][j]), "caption": str(batch["caption"][j])})
        self.done += len(batch["_pos"])

    def results(self, protocol: dict) -> list[dict]:
        """One record a metric and guidance scale, each with the protocol it was measured under."""
        spec, done, results = self.spec, self.done, []
        if spec.kind == "caption":
            results.append({"metric": "clip_text_image", "value": _mean(self.clip_sums, "clip_text", done),
                            "protocol": {**protocol, "guidance": None}})
        for i, scale in enumerate(spec.guidance if self.generated else []):
            fid_name = "recon_fid" if spec.kind == "recon" else "caption_t2i_fid"
            results.append({"metric": fid_name, "value": self.fids[i].compute(),
                            "protocol": {**protocol, "guidance": scale}})
            if spec.kind == "recon" and spec.clip:
                results.append({"metric": "clip_image_image", "value": _mean(self.clip_sums, f"clip{i}", done),
                                "protocol": {**protocol, "guidance": scale}})
        return results


def _protocol(spec: EvalSpec, meta: dict, export_uri: str, total: int, done: int, totals: _Totals) -> dict:
    """What every result states: image count, resize, feature extractor, steps, seed, export."""
    protocol = {"images": done, "asked": spec.images, "dropped_undecodable": total - done,
                "resolution": meta["resolution"],
                "resize": f"centre crop + resize to {meta['resolution']} px (the training decode); generated images "
                          f"resized to it (bicubic) when they differ",
                "features": feature_lib.describe(spec.features, totals.fids[0].num_features if totals.fids else None),
                "steps": spec.steps, "scheduler": spec.scheduler or "DDIMScheduler", "seed": spec.seed,
                "clip": spec.clip, "export": export_uri, "export_step": meta.get("step"), "data": spec.data}
    if spec.kind == "caption":
        protocol.update({"beams": spec.beams, "max_new_tokens": spec.max_new_tokens, "t2i": spec.t2i})
    return protocol


def _mean(sums: dict[str, float], key: str, n: int) -> float | None:
    return sums[key] / n if key in sums else None


def _grid_png(rows: dict[int, list]) -> bytes:
    """Originals beside what was generated from them (one column per guidance scale), first rows first."""
    from PIL import Image

    from vlv_ray.grid import side_by_side

    def decode(png: bytes) -> np.ndarray:
        return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))

    ordered = [rows[p] for p in sorted(rows)]
    columns = [np.stack([decode(r[c]) for r in ordered]) for c in range(len(ordered[0]))]
    buf = io.BytesIO()
    Image.fromarray(side_by_side(*columns)).save(buf, "PNG")
    return buf.getvalue()
