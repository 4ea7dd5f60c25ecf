"""The model.* speed keys: validated like every key, and none changes what a step computes
beyond rounding (tiny preset, CPU)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from vlv_ray.config import ConfigError, from_dict
from vlv_ray.models import speed
from vlv_ray.models.presets import build_stage1
from vlv_ray.train.stage1 import Stage1

ROOT = Path(__file__).resolve().parents[2]
BASE = {"name": "t", "storage_path": "/tmp/x", "data": {"uri": "/tmp/d", "resolution": 32},
        "model": {"preset": "tiny"}}


def job(**model):
    return from_dict({**BASE, "model": {"preset": "tiny", **model}})


@pytest.mark.parametrize("model, message", [
    ({"gradient_checkpointing": ["unet", "vae"]}, "model.gradient_checkpointing[1]: got 'vae', expected one of"),
    ({"compile": ["llm", "llm"]}, "model.compile: got ['llm', 'llm'], expected each module at most once"),
    ({"frozen_dtype": "fp16"}, "model.frozen_dtype: fp16 needs scaling.use_gpu=true"),
    ({"attention": "flash"}, "model.attention: got 'flash', expected one of 'sdpa', 'eager'"),
    ({"channels_last": "yes"}, "model.channels_last: got 'yes', expected true/false"),
])
def test_speed_keys_are_validated(model, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        job(**model)


def test_speed_keys_leave_the_config_hash_alone_but_frozen_dtype_does_not():
    base = job().config_hash()
    assert job(attention="eager", gradient_checkpointing=["unet"], channels_last=True,
               compile=["unet"]).config_hash() == base
    assert job(frozen_dtype="auto").config_hash() == base
    assert job(frozen_dtype="bf16").config_hash() != base


def test_frozen_dtype_follows_precision_unless_set():
    assert speed.frozen_dtype(job().model, "bf16") == torch.bfloat16
    assert speed.frozen_dtype(job(frozen_dtype="fp32").model, "bf16") == torch.float32


def _loss_and_grads(cfg_model, dtype=torch.float32, *, tower_px=32, encoder_dtype=torch.float32):
    """One stage-1 loss (cached-latent path) and the encoder's gradients, through the job's
    loss code; 32 px images, which the encoder resizes to `tower_px` for its vision tower."""
    encoder, decoder = build_stage1("tiny", resolution=tower_px, seed=0)
    decoder = decoder.to(dtype)
    encoder.to(encoder_dtype)
    speed.apply(cfg_model, speed.stage1_modules(encoder, decoder))
    encoder.train()
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (2, 32, 32, 3), dtype=torch.uint8, generator=g)
    moments = torch.rand((2, 2, 4, 4, 4), generator=g)
    stage = SimpleNamespace(decoder=decoder, device=torch.device("cpu"))
    loss = Stage1.loss(stage, encoder, {"image": images, "latent": moments}, torch.Generator().manual_seed(2))
    loss.backward()
    return loss.item(), torch.cat([p.grad.flatten() for p in encoder.parameters() if p.grad is not None])


def test_speed_keys_do_not_change_the_step():
    ref_loss, ref_grad = _loss_and_grads(job(attention="eager").model)
    for model in ({"attention": "sdpa"}, {"gradient_checkpointing": ["unet", "encoder"]}, {"channels_last": True}):
        loss, grad = _loss_and_grads(job(**model).model)
        assert loss == pytest.approx(ref_loss, rel=1e-5), model
        torch.testing.assert_close(grad, ref_grad, rtol=1e-4, atol=1e-6)
    loss, grad = _loss_and_grads(job(frozen_dtype="bf16").model, torch.bfloat16)
    assert loss == pytest.approx(ref_loss, rel=0.05)  # bf16 rounding of the frozen path only
    assert torch.nn.functional.cosine_similarity(grad, ref_grad, dim=0) > 0.95


def test_attention_and_checkpointing_reach_the_modules():
    encoder, decoder = build_stage1("tiny", resolution=32, seed=0)
    modules = speed.stage1_modules(encoder, decoder)
    speed.apply(job(attention="eager", gradient_checkpointing=["unet", "encoder"], compile=["unet", "encoder"]).model,
                modules)
    assert decoder.text_encoder.config._attn_implementation == "eager"
    assert encoder.florence.config.text_config._attn_implementation == "eager"
    assert {type(p).__name__ for p in decoder.unet.attn_processors.values()} == {"AttnProcessor"}
    assert decoder.unet.is_gradient_checkpointing
    assert encoder.florence.language_model.is_activation_checkpointing
    lm = encoder.florence.language_model
    assert decoder.unet._compiled_call_impl is not None  # compiled in place: names unchanged
    assert lm.encoder._compiled_call_impl is not None and lm.decoder._compiled_call_impl is not None
    assert "unet.conv_in.weight" in dict(decoder.named_parameters())


def test_bench_step_tiny_on_cpu(tmp_path):
    """The benchmark a user runs: both configurations, one JSON line each, a ratio, results appended."""
    results = tmp_path / "results.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "benchmarks/bench_step.py", "--preset", "tiny", "--device", "cpu", "--stages", "1",
           "--steps", "1", "--warmup", "0", "--ours", "model.compile=[]", "--results", str(results)]
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = [json.loads(x) for x in out.stdout.splitlines() if x.startswith("{")]
    ref, ours, ratio = lines
    assert (ref["config"], ours["config"]) == ("reference", "ours")
    assert ref["vae_encode_every_step"] and not ours["vae_encode_every_step"]
    assert ref["model.gradient_checkpointing"] == ["unet"] and ours["precision"] == "bf16"
    # The reference also encodes with the VAE: more FLOPs per sample, counted.
    assert ref["flops_per_sample"] > ours["flops_per_sample"] > 0
    assert ratio["ours_over_reference_samples_per_s"] == pytest.approx(ours["samples_per_s"] / ref["samples_per_s"],
                                                                       abs=0.01)
    saved = json.loads(results.read_text())["results"]
    assert [r["config"] for r in saved] == ["reference", "ours"] and saved[1]["samples_per_s"] > 0
    bad = subprocess.run(cmd[:-2] + ["--ours", "model.compile=[vae2]", "--results", ""], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=600)
    assert bad.returncode == 2 and "model.compile[0]: got 'vae2'" in bad.stderr


def test_profile_step_splits_a_step_by_kind_on_cpu():
    """The profile a user runs when MFU falls short: one JSON line, shares that add up."""
    cmd = [sys.executable, "benchmarks/profile_step.py", "--preset", "tiny", "--device", "cpu", "--stage", "1",
           "--ours", "model.compile=[]", "--warmup", "1", "--steps", "1"]
    out = subprocess.run(cmd, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    (p,) = [json.loads(x) for x in out.stdout.splitlines() if x.startswith("{")]
    assert p["bench"] == "profile_step" and p["step_s"] > 0 and p["busy_s_per_step"] > 0
    assert sum(p["share_of_busy"].values()) == pytest.approx(1.0, abs=0.01)
    # A UNet + Florence step spends time in matmuls, convolutions and attention, and the top list says which.
    assert {"matmul", "convolution", "attention"} <= set(p["share_of_busy"])
    assert p["top"] and all(t["s_per_step"] > 0 for t in p["top"])
