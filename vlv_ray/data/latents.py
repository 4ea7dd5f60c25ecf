"""The latent cache: `vlv-ray data latents URI --model SD_DIR`.

Stage 1 encodes every image with the frozen VAE on every epoch (≈2.6 epochs at paper
scale). The cache runs that encode once, in a Ray Data actor pool (one GPU per actor when
the cluster has GPUs, CPU otherwise), and stores each image's VAE posterior next to its
shard:

    <dataset>/latents-<res>/shard-00000.parquet    key, latent (bf16 or fp16 bytes)

Each latent file has the same rows in the same row groups as its shard, so the training
reader takes the same rows from both. `latent` holds the posterior's mean and std
[2, C, h, w]; training draws the latent from them with its own per-step generator,
exactly as the uncached path does. A row the decoder rejects gets an empty latent.

The manifest gains a `latents` entry (resolution, dtype, VAE digest, files); training
uses a cache only when its resolution and VAE digest match the job's, so a stale cache
is ignored, never trained on. The shards themselves are not rewritten: their sha256 in
the manifest stays valid.
"""
from __future__ import annotations

import hashlib
import io
import sys
import time
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from vlv_ray import storage
from vlv_ray.config import TORCH_DTYPES
from vlv_ray.data import order, shards
from vlv_ray.data.manifest import shard_paths

LATENT_SCHEMA = pa.schema([("key", pa.string()), ("latent", pa.binary())])
DTYPES = {k: TORCH_DTYPES[k] for k in ("bf16", "fp16")}  # half precision only: the cache halves reads


def vae_digest(vae) -> str:
    """sha256 of the VAE's weights: what a cache was made with."""
    import torch

    h = hashlib.sha256()
    for name, t in sorted(vae.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def latents_dir(resolution: int) -> str:
    return f"latents-{resolution}"


def find_cache(manifest: dict[str, Any], resolution: int, digest: str) -> dict[str, Any] | None:
    for entry in manifest.get("latents", []):
        if entry["resolution"] == resolution and entry["vae_sha256"] == digest:
            return entry
    return None


def _read_decode(batch: dict[str, np.ndarray], fs, paths: list[str], resolution: int) -> dict[str, np.ndarray]:
    """(shard, group) items → decoded uint8 images in file order; rejects flagged, not dropped."""
    from vlv_ray.data.decode import BadImage, decode_image

    cols: dict[str, list] = {"shard": [], "row": [], "key": [], "image": [], "ok": []}
    for shard, group in zip(batch["shard"], batch["group"]):
        path = paths[int(shard)]
        with fs.open_input_file(path) as f:
            pf = pq.ParquetFile(f)
            table = pf.read(columns=["key", "image"]) if group < 0 else pf.read_row_group(int(group), ["key", "image"])
        first = 0 if group < 0 else sum(pf.metadata.row_group(g).num_rows for g in range(int(group)))
        for i, (key, data) in enumerate(zip(table.column("key").to_pylist(), table.column("image").to_pylist())):
            try:
                img, ok = decode_image(data, resolution), True
            except BadImage:
                img, ok = np.zeros((resolution, resolution, 3), np.uint8), False  # a placeholder the encoder skips
            cols["shard"].append(int(shard))
            cols["row"].append(first + i)
            cols["key"].append(key)
            cols["image"].append(img)
            cols["ok"].append(ok)
    return {k: (np.stack(v) if k == "image" else np.asarray(v, dtype=object if k == "key" else None))
            for k, v in cols.items()}


class _Encoder:
    """A Ray Data actor: one VAE, loaded once, on the actor's GPU if it has one."""

    def __init__(self, model: str, dtype: str):
        import torch
        from diffusers import AutoencoderKL

        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.vae = AutoencoderKL.from_pretrained(model, subfolder="vae").to(self.device).eval()
        self.dtype = getattr(torch, DTYPES[dtype])

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        from vlv_ray.models.decoder import posterior

        ok = np.asarray(batch["ok"], dtype=bool)
        latents = np.full(len(ok), b"", dtype=object)
        if ok.any():
            with torch.no_grad():
                images = torch.from_numpy(np.ascontiguousarray(batch["image"][ok])).to(self.device)
                mean, std = posterior(self.vae, images)
                moments = torch.stack([mean, std], dim=1).to(self.dtype).cpu()
            raw = moments.view(torch.int16).numpy()  # numpy has no bf16: keep the bits
            for i, r in zip(np.flatnonzero(ok), raw):
                latents[i] = r.tobytes()
        return {"shard": batch["shard"], "row": batch["row"], "key": batch["key"],
                "latent": latents}


def build(uri: str, model: str, *, resolution: int, dtype: str = "bf16", batch_size: int = 32,
          actors: int | None = None, progress: bool = True, **kw) -> dict[str, Any]:
    """Encode every row of the dataset at `uri` with the VAE in `model`; returns the manifest entry."""
    import ray
    import torch
    from diffusers import AutoencoderKL

    if dtype not in DTYPES:
        raise shards.DataError(f"dtype: got {dtype!r}, expected one of {', '.join(DTYPES)}")
    try:
        digest = vae_digest(AutoencoderKL.from_pretrained(model, subfolder="vae"))
    except (OSError, ValueError) as e:
        raise shards.DataError(f"{model}: not a Stable Diffusion directory with a vae/ folder ({e})") from None
    fs, paths, manifest = shard_paths(uri, **kw)
    blocks = order.blocks_from_manifest(manifest)
    gpus = int(ray.cluster_resources().get("GPU", 0)) if ray.is_initialized() else torch.cuda.device_count()
    pool = actors or max(1, gpus)

    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True  # results arrive shard by shard
    ctx.enable_progress_bars = False
    ds = ray.data.from_items([{"shard": b.shard, "group": b.group} for b in blocks], override_num_blocks=len(blocks))
    # Decode on CPU tasks, encode on `pool` actors: separate operators, so the GPUs are
    # never kept waiting by decoding inside the actor.
    ds = ds.map_batches(_read_decode, batch_size=1, num_cpus=1,
                        fn_kwargs={"fs": fs, "paths": paths, "resolution": resolution})
    ds = ds.map_batches(_Encoder, fn_constructor_kwargs={"model": model, "dtype": dtype}, batch_size=batch_size,
                        compute=ray.data.ActorPoolStrategy(size=pool), num_gpus=1 if gpus else 0,
                        num_cpus=0.5 if not gpus else 1)

    out_dir = storage.join(uri, latents_dir(resolution))
    files, pending, done, t0 = [], {}, 0, time.time()
    shape = None
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        for shard, row, key, latent in zip(batch["shard"], batch["row"], batch["key"], batch["latent"]):
            pending.setdefault(int(shard), {})[int(row)] = (key, latent)
            if latent and shape is None:
                shape = _latent_shape(len(latent), model)
        for shard in sorted(s for s, rows in pending.items() if len(rows) == manifest["shards"][s]["rows"]):
            files.append(_write(out_dir, manifest["shards"][shard], pending.pop(shard), kw))
            done += files[-1]["rows"]
            if progress:
                rate = done / max(time.time() - t0, 1e-6)
                print(f"[latents] {files[-1]['path']}: {done}/{manifest['rows']} rows, {rate:.0f} img/s, "
                      f"ETA {(manifest['rows'] - done) / rate:.0f}s", file=sys.stderr, flush=True)
    if pending:
        raise RuntimeError(f"{uri}: latents missing for shards {sorted(pending)}")
    files.sort(key=lambda f: f["path"])
    if shape is None:
        raise shards.DataError(f"{uri}: no row could be decoded, so there is nothing to cache")
    entry = {"resolution": resolution, "dtype": dtype, "shape": shape, "vae_sha256": digest, "model": model,
             "dir": latents_dir(resolution), "files": files,
             "empty": sum(f["empty"] for f in files)}
    # Re-read the manifest: write only our entry, replacing an older cache of this resolution.
    manifest = shards.load_manifest(uri, **kw)
    manifest["latents"] = [e for e in manifest.get("latents", []) if e["resolution"] != resolution] + [entry]
    storage.write_json_atomic(storage.join(uri, shards.MANIFEST), manifest, **kw)
    return entry


def _latent_shape(nbytes: int, model: str) -> list[int]:
    """[2, C, h, w] of a stored posterior: C from the VAE's config, h = w (square crops)."""
    import json as _json

    from vlv_ray import storage as _st

    c = _json.loads(_st.read_bytes(_st.join(model, "vae", "config.json")))["latent_channels"]
    side = int(round((nbytes // 2 // (2 * c)) ** 0.5))
    return [2, c, side, side]


def _write(out_dir: str, rec: dict[str, Any], rows: dict[int, tuple[str, bytes]], kw: dict) -> dict[str, Any]:
    keys = [rows[i][0] for i in range(rec["rows"])]
    table = pa.Table.from_pydict({"key": keys, "latent": [rows[i][1] for i in range(rec["rows"])]},
                                 schema=LATENT_SCHEMA)
    buf = io.BytesIO()
    writer = pq.ParquetWriter(buf, LATENT_SCHEMA, compression="none")
    start = 0
    for n in rec.get("row_groups") or [rec["rows"]]:  # the shard's row groups, exactly
        writer.write_table(table.slice(start, n), row_group_size=n)
        start += n
    writer.close()
    data = buf.getvalue()
    name = rec["path"]
    storage.write_bytes_atomic(storage.join(out_dir, name), data, **kw)
    return {"path": name, "rows": rec["rows"], "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(),
            "empty": sum(1 for i in range(rec["rows"]) if not rows[i][1])}
