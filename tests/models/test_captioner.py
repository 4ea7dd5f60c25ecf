"""The caption decoder: end-of-text is a target, prefix and padding are not, and a trained
model stops by itself."""
import pytest
import torch

from vlv_ray.models.captioner import IGNORE, tiny_captioner

CAPTIONS = ["a large red circle", "two small blue squares on a dark background", "a green triangle"]


@pytest.fixture(scope="module")
def trained():
    """Overfit 3 (prefix, caption) pairs: the captions differ in length, so stopping is learned."""
    torch.manual_seed(0)
    c = tiny_captioner(prefix_dim=32, seed=0)
    prefix = torch.randn(3, 77, 32)
    opt = torch.optim.AdamW(c.parameters(), lr=3e-3)
    for _ in range(200):
        loss = c.loss(prefix, CAPTIONS)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return c.eval(), prefix, loss.item()


def test_labels_mask_prefix_and_padding_but_learn_end_of_text():
    c = tiny_captioner(prefix_dim=32)
    embeds, attention, labels = c.inputs(torch.randn(2, 5, 32), ["a red circle", "a circle"])
    eos = c.tokenizer.eos_token_id
    assert c.tokenizer.pad_token_id == eos  # as in Qwen2.5: the pad token is end-of-text
    assert embeds.shape == (2, 5 + 4, 64) and embeds.dtype == torch.float32
    assert (labels[:, :5] == IGNORE).all() and (attention[:, :5] == 1).all()
    ids = c.tokenizer("a red circle", add_special_tokens=False)["input_ids"]
    assert labels[0, 5:].tolist() == ids + [eos]  # end-of-text is a target...
    assert labels[1, 5:].tolist() == ids[:1] + [ids[-1], eos, IGNORE]  # ...padding is not
    assert attention[1].tolist() == [1] * 8 + [0]


def test_loss_ignores_padding_and_prefix_targets_but_not_end_of_text():
    c = tiny_captioner(prefix_dim=32)
    prefix = torch.randn(2, 5, 32)
    with torch.no_grad():
        base = c.loss(prefix, ["a red circle", "a circle"])
        # What sits in the padded position does not matter: masked, and after end-of-text.
        embeds, attention, labels = c.inputs(prefix, ["a red circle", "a circle"])
        embeds[1, -1] += 5.0
        padded = c.llm(inputs_embeds=embeds, attention_mask=attention, labels=labels).loss
        # Dropping the end-of-text target changes the loss: it is learned.
        labels[labels == c.tokenizer.eos_token_id] = IGNORE
        no_eos = c.llm(inputs_embeds=embeds, attention_mask=attention, labels=labels).loss
    assert torch.allclose(base, padded, atol=1e-6)
    assert not torch.allclose(base, no_eos, atol=1e-4)


def test_gradients_reach_projector_and_llm():
    c = tiny_captioner(prefix_dim=32)
    prefix = torch.randn(2, 5, 32, requires_grad=True)
    c.loss(prefix, CAPTIONS[:2]).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in c.projector.parameters())
    assert c.llm.model.layers[0].self_attn.q_proj.weight.grad.abs().sum() > 0
    assert prefix.grad.abs().sum() > 0  # and on to the encoder in stage 2


def test_an_overfit_model_reproduces_each_caption_and_stops(trained):
    c, prefix, loss = trained
    assert loss < 0.05
    assert c.generate(prefix, max_new_tokens=30) == CAPTIONS  # greedy: exact, and it ended by itself
    out = c.llm.generate(inputs_embeds=c.projector(prefix), attention_mask=torch.ones(3, 77, dtype=torch.long),
                         max_new_tokens=30, eos_token_id=c.eos_id, pad_token_id=c.pad_id, do_sample=False)
    assert out.shape[1] < 30  # stopped at end-of-text, long before the limit
    assert c.generate(prefix, max_new_tokens=30, num_beams=3) == CAPTIONS
    sampled = c.generate(prefix, max_new_tokens=30, do_sample=True, temperature=0.5)
    assert len(sampled) == 3 and all(isinstance(s, str) and s for s in sampled)


def test_truncation_keeps_end_of_text():
    c = tiny_captioner(prefix_dim=32, max_caption_tokens=3)
    tokens, mask = c.targets(["a large red circle on a dark background"])
    assert tokens.shape == (1, 3) and tokens[0, -1].item() == c.tokenizer.eos_token_id


@pytest.mark.parametrize("train_encoder", [True, False])
def test_stage2_gradients_reach_exactly_the_trainable_parts(train_encoder):
    from vlv_ray.models.presets import build_stage1
    from vlv_ray.models.caption_model import CaptionModel

    encoder, decoder = build_stage1("tiny", resolution=32)
    model = CaptionModel(encoder, decoder.text_encoder, tiny_captioner(prefix_dim=decoder.hidden_size),
                         train_encoder=train_encoder).train()
    assert not model.text_encoder.training  # frozen parts stay in eval mode
    images = torch.randint(0, 256, (2, 32, 32, 3), dtype=torch.uint8)
    prefix = model.prefix(images)
    assert prefix.shape == (2, 77, decoder.hidden_size) and prefix.dtype == torch.float32
    model(images, CAPTIONS[:2]).backward()
    assert all(p.grad is None for p in model.text_encoder.parameters())
    assert all(p.grad is None for p in model.encoder.florence.vision_tower.parameters())
    assert (model.encoder.queries.grad is not None) == train_encoder
    assert all(p.grad is not None for p in model.captioner.parameters() if p.requires_grad)
