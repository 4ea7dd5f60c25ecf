"""The latent cache: built by a Ray Data actor pool, aligned with the shards, and the
same loss as encoding on the fly (within bf16 rounding)."""
import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from vlv_ray.config import load_job
from vlv_ray.data import latents, shards
from vlv_ray.data.decode import decode_image
from vlv_ray.models.presets import build_stage1
from vlv_ray.train import launch
from vlv_ray.train.stage1 import Stage1

from helpers import JOBS


@pytest.fixture(scope="module")
def cached(ray_cluster, tiny_dataset, tmp_path_factory):
    root = tmp_path_factory.mktemp("latents")
    data = root / "data"
    shutil.copytree(tiny_dataset, data)
    _, decoder = build_stage1("tiny", resolution=32)  # the same seeded VAE the tiny job builds
    decoder.save_pretrained(root / "sd")
    entry = latents.build(str(data), str(root / "sd"), resolution=32, batch_size=16, progress=False)
    return data, root / "sd", entry


def test_cache_files_mirror_the_shards(cached):
    data, _, entry = cached
    manifest = json.loads((data / "manifest.json").read_text())
    assert manifest["latents"] == [entry] and entry["dir"] == "latents-32" and entry["empty"] == 0
    assert entry["shape"][:2] == [2, 4] and entry["shape"][2] == entry["shape"][3]
    for rec, f in zip(manifest["shards"], entry["files"]):
        shard, cache = pq.ParquetFile(data / rec["path"]), pq.ParquetFile(data / "latents-32" / f["path"])
        assert cache.metadata.num_row_groups == shard.metadata.num_row_groups
        assert cache.read(columns=["key"]).column("key").equals(shard.read(columns=["key"]).column("key"))
        assert all(len(b) == 2 * np.prod(entry["shape"]) for b in cache.read().column("latent").to_pylist())
    assert shards.inspect(str(data))["integrity"]["ok"]  # shards untouched: their sha256 still holds


def test_cached_latents_give_the_same_loss(cached):
    data, _, entry = cached
    cfg = load_job(JOBS / "tiny.yaml", [f"data.uri={data}"])
    stage = Stage1(cfg, torch.device("cpu"))
    assert latents.find_cache(json.loads((data / "manifest.json").read_text()), 32, stage.vae_digest) == entry
    table = pq.read_table(data / "shard-00000.parquet").slice(0, 4)
    cache = pq.read_table(data / "latents-32" / "shard-00000.parquet").slice(0, 4)
    images = torch.from_numpy(np.stack([decode_image(b, 32) for b in table.column("image").to_pylist()]))
    raw = np.frombuffer(b"".join(cache.column("latent").to_pylist()), dtype=np.int16).reshape(-1, *entry["shape"])
    moments = torch.from_numpy(raw.copy()).view(torch.bfloat16)
    with torch.no_grad():
        plain = stage.loss(stage.trainable, {"image": images}, torch.Generator().manual_seed(7))
        fast = stage.loss(stage.trainable, {"image": images, "latent": moments}, torch.Generator().manual_seed(7))
        other = stage.loss(stage.trainable, {"image": images, "latent": moments}, torch.Generator().manual_seed(8))
    assert torch.allclose(plain, fast, rtol=2e-2, atol=1e-3), (plain, fast)
    assert not torch.allclose(fast, other, rtol=1e-4)  # the comparison can tell losses apart


def test_a_cache_for_another_vae_is_ignored(cached):
    data, _, entry = cached
    assert latents.find_cache({"latents": [entry]}, 32, "0" * 16) is None
    assert latents.find_cache({"latents": [entry]}, 64, entry["vae_sha256"]) is None


def test_training_reads_the_cache(cached, tmp_path, capfd):
    data, _, _ = cached
    cfg = load_job(JOBS / "tiny.yaml", [f"data.uri={data}", f"storage_path={tmp_path}", "name=cached",
                                        "max_steps=3", "checkpoint.every_steps=3",
                                        "logging.eval_every_steps=2", "logging.eval_sample_steps=2"])
    result = launch.run(cfg)
    assert result.error is None and result.metrics["step"] == 3
    assert "latents from latents-32 (bf16)" in capfd.readouterr().out
    # The eval at step 2: the first 4 images of rank 0's batch beside their reconstructions.
    from PIL import Image

    grid = np.asarray(Image.open(tmp_path / "cached" / "eval" / "reconstructions-step-00000002.png"))
    assert grid.shape == (4 * 32, 2 * 32, 3) and grid[:, 32:].std() > 0
