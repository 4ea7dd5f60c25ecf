"""The `toy` preset's models (registered in `presets.py`): the committed teacher as the frozen
decoder, a small Florence-2 encoder and a tiny Qwen2-class caption LM, both from seeded
random weights.

The teacher is loaded through `FrozenDiffusion.from_pretrained` from `model.stable_diffusion`
(default: the committed `assets/teacher`), the same call that loads SD 2.1. Its CLIP
context is 16 tokens, so the toy world's "77 queries" are 16.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from vlv_ray.toyworld.assets import TEACHER_DIR

if TYPE_CHECKING:
    import torch

# The teacher's CLIP context (tokens.MAX_TEXT_TOKENS; a test holds them equal): at most this
# many queries. Nothing heavy is imported at module level: `config check` registers this preset.
NUM_QUERIES = 16
PROMPT_IDS = [0, 10, 11, 12, 13, 2]  # <s> four prompt tokens </s>, as in the tiny preset


def florence2_config():
    """Florence-2's classes, small: DaViT 32 px → 4 × 4 tokens (+1 pooled), BART of width 64."""
    from transformers import BartConfig, Florence2Config, Florence2VisionConfig

    vision = Florence2VisionConfig(
        depths=(1, 1), patch_size=(7, 3), patch_stride=(4, 2), patch_padding=(3, 1),
        patch_prenorm=(False, True), embed_dim=(32, 64), num_heads=(2, 4), num_groups=(2, 4),
        window_size=2, drop_path_rate=0.0, projection_dim=64, max_position_embeddings=32)
    text = BartConfig(
        vocab_size=64, d_model=64, encoder_layers=1, decoder_layers=2, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=128, decoder_ffn_dim=128, max_position_embeddings=64,
        dropout=0.0)
    return Florence2Config(vision_config=vision.to_dict(), text_config=text.to_dict(), image_token_id=63)


def teacher_path(sd_path: str | None) -> str:
    return sd_path or str(TEACHER_DIR)


def _quiet_loaders() -> None:
    """The teacher loads in a fraction of a second: no per-file progress bars and no advice
    to install `accelerate` on every worker's terminal."""
    import diffusers
    import transformers

    diffusers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def build_stage1(*, num_queries: int, resolution: int, sd_path: str | None, train_vision_tower: bool, seed: int,
                 florence_path: str | None = None, empty: bool = False, device: str = "meta"):
    """(trainable encoder, frozen teacher). The encoder's weights are a pure function of `seed`
    and `florence_path`: None keeps the seeded random vision tower; a file made by
    `python -m vlv_ray.toyworld.tower` (e.g. the committed `assets/vision_tower.safetensors`)
    replaces the tower and projector with pretrained ones, as Florence-2's are.

    `empty` (configs alone) builds the same models for real: the teacher's weights are in the
    package and the whole thing is small, so `device` is not used.
    """
    import torch
    from transformers import Florence2ForConditionalGeneration

    from vlv_ray.models.decoder import FrozenDiffusion
    from vlv_ray.models.encoder import VLVEncoder

    _quiet_loaders()
    decoder = FrozenDiffusion.from_pretrained(teacher_path(sd_path))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        florence = Florence2ForConditionalGeneration(florence2_config()).model
        encoder = VLVEncoder(florence, PROMPT_IDS, image_size=resolution, num_queries=num_queries,
                             out_dim=decoder.hidden_size, train_vision_tower=train_vision_tower)
    if florence_path:
        load_into(florence, florence_path)
    return encoder, decoder


# A pretrained tower file (made by tower.py, which imports these): the tower's and projector's
# weights by Florence2Model's names.
PARTS = ("vision_tower.", "multi_modal_projector.")


def tower_state(florence) -> dict[str, torch.Tensor]:
    """The tower's and projector's parameters and persistent buffers, by Florence2Model's names."""
    return {k: v.detach().contiguous() for k, v in florence.state_dict().items() if k.startswith(PARTS)}


def load_into(florence, path: str | Path) -> None:
    """Load a tower file into `florence` (a Florence2Model of the toy config), all of it or nothing."""
    from safetensors.torch import load_file

    got = load_file(str(path))
    want = tower_state(florence)
    if set(got) != set(want) or any(got[k].shape != want[k].shape for k in want):
        raise ValueError(f"{path}: not a toy vision tower (expected the keys and shapes of {PARTS} in the toy "
                         "Florence-2 config; remake it with python -m vlv_ray.toyworld.tower)")
    florence.load_state_dict(got, strict=False)


def toy_captioner(prefix_dim: int, seed: int = 0, max_caption_tokens: int = 16):
    """A Qwen2-class LM with a tiny config over the world's words, from seeded random weights.

    Not pretrained: the caption grammar is one fixed template over 20 words, which the LM
    learns within the first few dozen stage-2 steps (the loss on the grammar's fixed words
    falls to ≈0 long before the attribute words do), so pretraining it on caption text
    would only add committed weights.
    """
    from vlv_ray.models.captioner import tiny_captioner
    from vlv_ray.toyworld.tokens import lm_tokenizer

    return tiny_captioner(prefix_dim, seed, max_caption_tokens, tokenizer=lm_tokenizer(), max_positions=64)

