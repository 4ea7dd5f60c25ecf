"""Resuming with a different number of workers (a spot cluster that came back smaller)."""
import json
from pathlib import Path

import pytest
import torch

from vlv_ray.train import launch

from helpers import keys_seen, tiny_job, trace


@pytest.mark.parametrize("zero_stage", [2, 3])
def test_resume_on_fewer_workers(ray_cluster, tiny_dataset, tmp_path, zero_stage):
    def job(workers, steps):
        return tiny_job(tiny_dataset, tmp_path, f"name=resize-z{zero_stage}", f"deepspeed.zero_stage={zero_stage}",
                        f"scaling.num_workers={workers}", f"max_steps={steps}", "checkpoint.every_steps=2",
                        trace(trace_file))

    trace_file = tmp_path / "trace.txt"
    first = launch.run(job(2, 4))
    assert first.error is None and first.metrics["step"] == 4
    before = Path(first.checkpoint.path)
    assert json.loads((before / "trainer_state.json").read_text())["world_size"] == 2

    # 64 rows: 4 steps × 2 workers × 4 used 32; one worker needs 8 more steps for the rest.
    second = launch.run(job(1, 12))
    assert second.error is None, second.error
    assert second.metrics["resumed_from"] == 4 and second.metrics["step"] == 12
    assert second.metrics["epoch"] == 0
    keys = keys_seen(trace_file)
    assert len(keys) == 64 and len(set(keys)) == 64  # the epoch finished on 1 worker: each row once
    assert torch.isfinite(torch.tensor(second.metrics["loss"]))
    after = Path(second.checkpoint.path)
    assert json.loads((after / "trainer_state.json").read_text())["world_size"] == 1
    assert len(list((after / "engine").glob("*optim_states.pt"))) == 1
