"""Stage 1 end to end on a real local Ray cluster: 2 CPU workers, real DeepSpeed ZeRO-2."""
import json
import os
from pathlib import Path

import pytest
import torch

from vlv_ray.train import launch

from helpers import JOBS, free_port, tiny_job, trace


@pytest.mark.integration  # a real DeepSpeed engine
def test_frozen_modules_are_not_in_the_optimizer(tmp_path, tiny_dataset, process_group_of_one):
    import deepspeed

    from vlv_ray.train.engine import deepspeed_config
    from vlv_ray.train.loop import build_stage

    cfg = tiny_job(tiny_dataset, tmp_path, "scaling.num_workers=1")
    stage = build_stage(cfg, torch.device("cpu"))
    engine, optimizer, _, _ = deepspeed.initialize(
        model=stage.trainable,
        model_parameters=[p for p in stage.trainable.parameters() if p.requires_grad],
        config=deepspeed_config(cfg))
    in_optimizer = sum(p.numel() for g in optimizer.optimizer.param_groups for p in g["params"])
    trainable = sum(p.numel() for p in stage.trainable.parameters() if p.requires_grad)
    frozen_in_encoder = sum(p.numel() for p in stage.trainable.parameters() if not p.requires_grad)
    assert in_optimizer == trainable > 0 and frozen_in_encoder > 0  # vision tower frozen
    assert all(not p.requires_grad for p in stage.decoder.parameters())
    assert not stage.decoder.training
    # One real step: the frozen decoder still gets no gradient.
    batch = {"image": torch.randint(0, 256, (4, 32, 32, 3), dtype=torch.uint8), "key": list("abcd")}
    loss = stage.loss(engine, batch, torch.Generator().manual_seed(0))
    engine.backward(loss)
    engine.step()
    assert torch.isfinite(loss)
    assert all(p.grad is None for p in stage.decoder.parameters())


@pytest.mark.integration  # real DeepSpeed engines
def test_a_second_process_group_in_one_process_gets_a_working_engine(monkeypatch):
    """Local mode (`--local`, the demo's points) ends its group and may start another in the same
    process; with torch's destroy alone DeepSpeed kept a stale world group and the second engine
    failed with "Group … is not registered" (CI, stop 24)."""
    import deepspeed
    import torch.distributed as dist

    from vlv_ray.train.engine import destroy_process_group

    config = {"train_micro_batch_size_per_gpu": 1, "zero_optimization": {"stage": 2},
              "optimizer": {"type": "AdamW", "params": {"lr": 1e-3, "torch_adam": True}}}
    for attempt in range(2):
        for k, v in dict(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), RANK="0", WORLD_SIZE="1",
                         LOCAL_RANK="0").items():
            monkeypatch.setenv(k, v)
        dist.init_process_group("gloo")
        try:
            model = torch.nn.Linear(4, 1)
            engine, *_ = deepspeed.initialize(model=model, model_parameters=model.parameters(), config=config)
            before = model.weight.detach().clone()
            engine.backward(engine(torch.ones(1, 4)).sum())
            engine.step()
            assert not torch.equal(before, model.weight.detach()), attempt
        finally:
            destroy_process_group()
    assert not dist.is_initialized()


def test_two_worker_zero2_trains_checkpoints_and_resumes(ray_cluster, tiny_dataset, tmp_path):
    runs = tmp_path / "runs"
    # A constant lr: the schedule depends on max_steps, which the resumed run raises.
    first = launch.run(tiny_job(tiny_dataset, runs, "name=resume", "max_steps=4", "checkpoint.every_steps=2",
                                "optim.schedule=constant", trace(tmp_path / "resumed.txt")))
    assert first.error is None
    assert first.metrics["step"] == 4 and first.metrics["resumed_from"] == 0
    assert torch.isfinite(torch.tensor(first.metrics["loss"]))

    ckpt = Path(first.checkpoint.path)
    assert ckpt.name == "step-00000004" and ckpt.parent == runs / "resume"
    state = json.loads((ckpt / "trainer_state.json").read_text())
    assert state["step"] == 4 and state["world_size"] == 2
    # Every rank's ZeRO-2 optimizer shard landed in the one merged checkpoint directory.
    shards = sorted(p.name for p in (ckpt / "engine").glob("zero_pp_rank_*_optim_states.pt"))
    assert shards == ["zero_pp_rank_0_mp_rank_00_optim_states.pt", "zero_pp_rank_1_mp_rank_00_optim_states.pt"]
    assert (runs / "resume" / "step-00000002" / "trainer_state.json").is_file()

    # A checkpoint whose save crashed half-way (no _COMPLETE marker) is never resumed from.
    partial = runs / "resume" / "step-00000005"
    (partial / "engine").mkdir(parents=True)
    (partial / "trainer_state.json").write_text('{"step": 5}')
    # Re-running the same job name continues from step 4, not from 0 (and past the end of
    # epoch 0 at step 8: 64 rows / (2 workers × 4)).
    before = torch.load(ckpt / "engine" / "mp_rank_00_model_states.pt", weights_only=False)["module"]
    second = launch.run(tiny_job(tiny_dataset, runs, "name=resume", "max_steps=10", "checkpoint.every_steps=2",
                                 "optim.schedule=constant", trace(tmp_path / "resumed.txt")))
    assert second.error is None
    assert second.metrics["resumed_from"] == 4 and second.metrics["step"] == 10 and second.metrics["epoch"] == 1
    after_dir = Path(second.checkpoint.path)
    after = torch.load(after_dir / "engine" / "mp_rank_00_model_states.pt", weights_only=False)["module"]
    assert after_dir.name == "step-00000010" and (after_dir / "_COMPLETE").is_file()
    changed = [k for k in after if not torch.equal(after[k], before[k])]
    assert changed and all(torch.equal(after[k], before[k]) for k in after if "vision_tower" in k)
    # The export holds exactly the trainable weights, equal to the engine's (ZeRO-2 keeps
    # whole weights in the model-states file).
    from safetensors.torch import load_file

    exported = load_file(runs / "resume" / "export" / "stage1" / "trainable.safetensors")
    trainable = {n for n, p in __import__("vlv_ray.models.presets", fromlist=["x"]).build_stage1(
        "tiny", resolution=32)[0].named_parameters() if p.requires_grad}
    assert set(exported) == trainable and "queries" in exported
    assert all(torch.equal(exported[k], after[k]) for k in exported)
    # keep_last=2: only steps 8 and 10 are left; the planted partial directory was deleted on resume.
    assert sorted(p.name for p in (runs / "resume").glob("step-*")) == ["step-00000008", "step-00000010"]

    # The interrupted run equals one that never stopped, bit for bit: same rows in the same
    # order on each rank (the data position resumes mid-epoch), same noise, same weights.
    straight = launch.run(tiny_job(tiny_dataset, runs, "name=straight", "max_steps=10", "checkpoint.every_steps=10",
                                   "optim.schedule=constant", trace(tmp_path / "straight.txt")))
    assert straight.error is None and straight.metrics["loss"] == second.metrics["loss"]
    assert sorted((tmp_path / "straight.txt").read_text().splitlines()) == \
        sorted((tmp_path / "resumed.txt").read_text().splitlines())
    final = torch.load(Path(straight.checkpoint.path) / "engine" / "mp_rank_00_model_states.pt",
                       weights_only=False)["module"]
    assert all(torch.equal(final[k], after[k]) for k in after)


def test_local_mode_runs_the_loop_in_process_without_persisting(ray_head, tiny_dataset, tmp_path):
    import subprocess
    import sys

    r = subprocess.run(
        [sys.executable, "-m", "vlv_ray.cli", "train", "jobs/tiny.yaml", f"data.uri={tiny_dataset}",
         f"storage_path={tmp_path / 'runs'}", "name=local", "max_steps=3", "--local"],
        cwd=JOBS.parent, env={**os.environ, "RAY_ADDRESS": ray_head.address},
        capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "step 3/3 | loss" in r.stdout + r.stderr and "done: step 3" in r.stdout
    assert not (tmp_path / "runs" / "local").exists()  # debugging runs leave storage alone
