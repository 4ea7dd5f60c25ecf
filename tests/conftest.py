"""Shared fixtures: one real local Ray cluster for the whole session, temp dirs.

The cluster is started in-process with `ray.init` and stopped with `ray.shutdown`, so
it only ever touches processes this test run created.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# DeepSpeed compiles C++ ops on first use; keep them in the repo's cache, not ~.
os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(REPO / ".cache" / "torch_extensions"))
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")


@pytest.fixture(scope="session")
def ray_cluster():
    """A real local Ray cluster shared by every test that needs one."""
    import ray

    from vlv_ray.train.launch import ensure_ray

    ensure_ray(num_cpus=4)
    yield ray
    ray.shutdown()
