"""The DeepSpeed side of a run: its config from a job, and the engine over a stage's model."""
from __future__ import annotations

from typing import Any

from vlv_ray.config import JobConfig


def deepspeed_config(cfg: JobConfig, *, load_universal: bool = False) -> dict[str, Any]:
    ds, opt = cfg.deepspeed, cfg.optim
    zero: dict[str, Any] = {"stage": ds.zero_stage}
    if ds.offload_optimizer != "none":
        zero["offload_optimizer"] = {"device": ds.offload_optimizer}
    if ds.offload_param != "none":
        zero["offload_param"] = {"device": ds.offload_param}
    config = {
        "train_micro_batch_size_per_gpu": cfg.data.batch_size,
        "gradient_accumulation_steps": ds.grad_accum_steps,
        "gradient_clipping": opt.grad_clip,
        "zero_optimization": zero,
        "bf16": {"enabled": ds.precision == "bf16"},
        "fp16": {"enabled": ds.precision == "fp16"},
        # torch_adam: torch's AdamW instead of DeepSpeed's JIT-compiled C++/CUDA op; DeepSpeed
        # hands it its flat fp32 partition, and fused=True makes the update one kernel over it.
        "optimizer": {
            "type": "AdamW",
            "params": {
                "lr": opt.lr,
                "betas": list(opt.betas),
                "eps": opt.eps,
                "weight_decay": opt.weight_decay,
                "torch_adam": True,
                **({"fused": True} if opt.fused else {}),
            },
        },
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    if load_universal:  # a checkpoint from another world size (train/checkpoint.py)
        config["checkpoint"] = {"load_universal": True}
    return config


def destroy_process_group() -> None:
    """End this process's group through DeepSpeed when DeepSpeed knows it.

    DeepSpeed caches a clone of the world group (`deepspeed.utils.groups._WORLD_GROUP`); torch's
    own `destroy_process_group` leaves that clone stale, and the next engine built in the same
    process fails with "Group … is not registered". DeepSpeed's call drops its cached groups too.
    """
    import torch.distributed as dist

    from deepspeed.comm import comm as ds_comm

    if ds_comm.is_initialized():
        ds_comm.destroy_process_group()
    elif dist.is_initialized():
        dist.destroy_process_group()


def build_engine(stage, cfg: JobConfig, *, load_universal: bool = False):
    """A DeepSpeed engine holding only the stage's trainable parameters."""
    import deepspeed

    engine, _, _, _ = deepspeed.initialize(
        model=stage.trainable,
        model_parameters=[p for p in stage.trainable.parameters() if p.requires_grad],
        config=deepspeed_config(cfg, load_universal=load_universal),
    )
    return engine
