"""The issue-19 speed keys (model.compile=[tower, encoder, llm], model.cuda_graphs,
model.tower_input, optim.fused): validated, reaching their modules, and giving the same
loss as without them (within bf16 rounding where the dtype changes). Tiny preset, CPU."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from vlv_ray.config import ConfigError, from_dict
from vlv_ray.models import speed
from vlv_ray.models.caption_model import build_caption_model
from vlv_ray.models.presets import build_stage1
from vlv_ray.train.stage1 import Stage1

from test_speed import _loss_and_grads

BASE = {"name": "t", "storage_path": "/tmp/x", "data": {"uri": "/tmp/d", "resolution": 32}}


def job(model=None, **sections):
    return from_dict({**BASE, "model": {"preset": "tiny", **(model or {})}, **sections})


@pytest.mark.parametrize("d, message", [
    ({"model": {"cuda_graphs": ["tower", "tower"]}}, "model.cuda_graphs: got ['tower', 'tower'], expected each"),
    ({"model": {"compile": ["tower2"]}}, "model.compile[0]: got 'tower2', expected one of"),
    ({"model": {"tower_input": "bf16"}}, "model.tower_input: got 'bf16', expected one of 'fp32', 'compute'"),
    ({"optim": {"fused": True}, "deepspeed": {"offload_optimizer": "cpu"}},
     "optim.fused: true needs deepspeed.offload_optimizer=none"),
])
def test_new_keys_are_validated(d, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(")
                       .replace(")", r"\)")):
        job(d.get("model"), **{k: v for k, v in d.items() if k != "model"})


def test_new_keys_leave_the_config_hash_alone():
    """A run may resume with them switched on: they change speed, not the maths."""
    base = job().config_hash()
    assert job({"compile": ["tower", "unet"], "cuda_graphs": ["tower"], "tower_input": "compute"},
               optim={"fused": True}).config_hash() == base


def _encoder(resolution=64):
    """A tiny encoder whose tower input (64 px) is twice the batch's 32 px, as 768 is to 384."""
    encoder, decoder = build_stage1("tiny", resolution=resolution, seed=0)
    return encoder, decoder


def _tower_inputs(encoder):
    seen = []
    encoder.florence.vision_tower.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    return seen


def test_tower_input_compute_reaches_the_tower_in_bf16_at_its_size():
    encoder, _ = _encoder()
    encoder.to(torch.bfloat16)
    seen = _tower_inputs(encoder)
    speed.apply(job({"tower_input": "compute"}).model, {"tower": encoder})
    assert encoder.tower_input == "compute"
    images = torch.randint(0, 256, (2, 32, 32, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        encoder(images)
    (x,) = seen
    assert x.dtype == torch.bfloat16 and tuple(x.shape) == (2, 3, 64, 64)
    # The same pixels as the fp32 resize, within bf16 rounding of values in about [-2.1, 2.6].
    encoder.tower_input = "fp32"
    torch.testing.assert_close(encoder.pixel_values(images).float(), x.float(), atol=0.04, rtol=0.02)
    # In fp32 the two paths are one resize: the matrices are F.interpolate's own weights.
    encoder.to(torch.float32)
    old = encoder.pixel_values(images)
    encoder.tower_input = "compute"
    torch.testing.assert_close(encoder.pixel_values(images), old, atol=1e-4, rtol=1e-4)


def test_tower_input_compute_gives_the_same_loss_within_bf16_rounding():
    def loss(model_keys, dtype):  # images at 32 px, the tower at 64 (as 384 is to 768)
        return _loss_and_grads(job(model_keys).model, dtype, tower_px=64, encoder_dtype=dtype)[0]

    exact = loss({}, torch.float32)
    old = loss({"tower_input": "fp32"}, torch.bfloat16)
    new = loss({"tower_input": "compute"}, torch.bfloat16)
    assert new == pytest.approx(old, rel=0.02)
    assert abs(new - exact) <= 2 * abs(old - exact) + 0.01 * exact  # no worse than bf16 already was


def test_compile_plan_names_each_module_and_cuda_graphs_only_on_a_gpu(capsys):
    encoder, decoder = _encoder(32)
    modules = speed.stage1_modules(encoder, decoder)
    cfg = job({"compile": ["tower", "encoder", "unet"], "cuda_graphs": ["tower", "unet"]}).model
    lm = encoder.florence.language_model
    gpu = {id(m): mode for m, mode in speed.compile_plan(cfg, modules, cuda=True)}
    assert gpu == {id(encoder.florence.vision_tower): "reduce-overhead", id(decoder.unet): "reduce-overhead",
                   id(lm.encoder): None, id(lm.decoder): None}
    assert {mode for _, mode in speed.compile_plan(cfg, modules, cuda=False)} == {None}
    assert "model.cuda_graphs=['tower', 'unet']: no GPU" in capsys.readouterr().out
    # compile=[] switches CUDA graphs off too: nothing compiled, nothing graphed.
    assert speed.compile_plan(job({"compile": [], "cuda_graphs": ["tower"]}).model, modules, cuda=True) == []


def test_llm_is_compiled_block_by_block():
    from vlv_ray.models.captioner import tiny_captioner

    llm = tiny_captioner(prefix_dim=32).llm
    targets = speed.compile_targets("llm", llm)
    assert targets == list(llm.model.layers) and len(targets) == 2


def _stage2_loss(model_keys: dict):
    encoder, decoder = build_stage1("tiny", resolution=32, seed=0)
    cfg = job({"stage1": "/tmp/s1", **model_keys}, stage=2)
    model = build_caption_model(cfg.model, encoder, decoder.text_encoder, seed=0)
    speed.apply(cfg.model, speed.stage2_modules(model), )
    model.train()
    images = torch.randint(0, 256, (2, 32, 32, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(3)
    loss = model(images, ["a red circle on a blue background", "two small squares"])
    loss.backward()
    grads = [p.grad.flatten() for p in model.parameters() if p.grad is not None]
    return loss.item(), torch.cat(grads), model


@pytest.mark.integration  # torch.compile (inductor, a C++ build on CPU): about a minute
def test_compiled_tower_encoder_and_llm_give_the_same_loss_and_gradients():
    ref_loss, ref_grad, _ = _stage2_loss({})
    loss, grad, model = _stage2_loss({"compile": ["tower", "encoder", "llm"]})
    assert loss == pytest.approx(ref_loss, rel=1e-4)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-3, atol=1e-5)
    lm = model.encoder.florence.language_model
    compiled = [model.encoder.florence.vision_tower, lm.encoder, lm.decoder, *model.captioner.llm.model.layers]
    assert all(m._compiled_call_impl is not None for m in compiled)
    assert model.captioner.llm._compiled_call_impl is None  # regional: the blocks, not the whole LM


@pytest.mark.integration  # a real DeepSpeed engine (gloo)
def test_fused_adamw_runs_in_deepspeed_with_the_same_losses(process_group_of_one):
    import deepspeed

    from vlv_ray.train.engine import deepspeed_config

    runs = {}
    for fused in (False, True):
        cfg = job(deepspeed={"precision": "bf16", "zero_stage": 2}, optim={"fused": fused, "lr": 1e-3})
        encoder, decoder = build_stage1("tiny", resolution=32, seed=0)
        decoder.to(torch.bfloat16)
        engine, optimizer, _, _ = deepspeed.initialize(
            model=encoder, model_parameters=[p for p in encoder.parameters() if p.requires_grad],
            config={**deepspeed_config(cfg), "train_micro_batch_size_per_gpu": 2})
        inner = optimizer.optimizer  # torch's AdamW over DeepSpeed's flat fp32 partition
        assert isinstance(inner, torch.optim.AdamW) and inner.defaults["fused"] is (True if fused else None)
        assert len(inner.param_groups[0]["params"]) == 1  # one flat buffer, not a tensor per parameter
        stage = SimpleNamespace(decoder=decoder, device=torch.device("cpu"))
        losses = []
        for step in range(3):
            g = torch.Generator().manual_seed(step)
            batch = {"image": torch.randint(0, 256, (2, 32, 32, 3), dtype=torch.uint8, generator=g),
                     "latent": torch.rand((2, 2, 4, 4, 4), generator=g)}
            loss = Stage1.loss(stage, engine, batch, torch.Generator().manual_seed(10 + step))
            engine.backward(loss)
            engine.step()
            losses.append(loss.item())
        runs[fused] = losses
    assert runs[True][0] == runs[False][0]  # before any update: the same model
    assert runs[True] == pytest.approx(runs[False], rel=1e-2)  # the same AdamW update, bf16 weights
    assert runs[True][2] != runs[True][0]  # and it did update
