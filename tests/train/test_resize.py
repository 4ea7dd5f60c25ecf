"""Resuming with a different number of workers (a spot cluster that came back smaller)."""
import json
from pathlib import Path

import pytest
import torch

from vlv_ray.config import load_job
from vlv_ray.train import launch

JOBS = Path(__file__).resolve().parents[2] / "jobs"


@pytest.mark.parametrize("zero_stage", [2, 3])
def test_resume_on_fewer_workers(ray_cluster, tiny_dataset, tmp_path, zero_stage):
    def job(workers, steps):
        return load_job(JOBS / "tiny.yaml", [
            f"data.uri={tiny_dataset}", f"storage_path={tmp_path}", f"name=resize-z{zero_stage}",
            f"deepspeed.zero_stage={zero_stage}", f"scaling.num_workers={workers}", f"max_steps={steps}",
            "checkpoint.every_steps=2"])

    first = launch.run(job(2, 4))
    assert first.error is None and first.metrics["step"] == 4
    before = Path(first.checkpoint.path)
    assert json.loads((before / "trainer_state.json").read_text())["world_size"] == 2

    second = launch.run(job(1, 6))
    assert second.error is None, second.error
    assert second.metrics["resumed_from"] == 4 and second.metrics["step"] == 6
    assert torch.isfinite(torch.tensor(second.metrics["loss"]))
    after = Path(second.checkpoint.path)
    assert json.loads((after / "trainer_state.json").read_text())["world_size"] == 1
    assert len(list((after / "engine").glob("*optim_states.pt"))) == 1
