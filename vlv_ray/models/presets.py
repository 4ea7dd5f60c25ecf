"""Model presets: `paper` (real weights from a path or hub id) and `tiny` (same classes,
tiny configs, random weights: tests and the demo).

Tiny keeps SD 2.1-base's structure where it matters to the method: CLIP text with GELU and
77 positions, a UNet whose cross-attention width is the CLIP width, linear projections in
its transformer blocks, a 4-channel VAE at 1/8 resolution with scaling factor 0.18215,
and an epsilon-prediction DDPM schedule with SD's scaled-linear betas.
"""
from __future__ import annotations

import torch

from vlv_ray.models.decoder import FrozenDiffusion
from vlv_ray.models.encoder import MORE_DETAILED_CAPTION, VLVEncoder

PRESETS = ("tiny", "paper")
PAPER_FLORENCE_IMAGE_SIZE = 768  # Florence-2's processor input size
TINY_IMAGE_TOKEN_ID = 63
TINY_PROMPT_IDS = [0, 10, 11, 12, 13, 2]  # <s> four prompt tokens </s>; no tokenizer needed


class ModelBuildError(ValueError):
    pass


def tiny_florence2_config():
    from transformers import BartConfig, Florence2Config, Florence2VisionConfig

    vision = Florence2VisionConfig(
        depths=(1, 1), patch_size=(7, 3), patch_stride=(4, 2), patch_padding=(3, 1),
        patch_prenorm=(False, True), embed_dim=(16, 32), num_heads=(2, 4), num_groups=(2, 4),
        window_size=2, drop_path_rate=0.0, projection_dim=32, max_position_embeddings=16)
    text = BartConfig(
        vocab_size=64, d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=128,
        dropout=0.0)
    return Florence2Config(vision_config=vision.to_dict(), text_config=text.to_dict(),
                           image_token_id=TINY_IMAGE_TOKEN_ID)


def tiny_clip_text_config():
    from transformers import CLIPTextConfig

    return CLIPTextConfig(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                          num_attention_heads=2, max_position_embeddings=77, hidden_act="gelu",
                          projection_dim=32, pad_token_id=1, bos_token_id=98, eos_token_id=99)


def tiny_unet(cross_attention_dim: int, sample_size: int):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=sample_size, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(32, 64), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=cross_attention_dim,
        attention_head_dim=(2, 4), norm_num_groups=8, use_linear_projection=True)


def tiny_vae(sample_size: int):
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 16, 16, 16), norm_num_groups=8, sample_size=sample_size,
        scaling_factor=0.18215)


def sd_scheduler():
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085,
                         beta_end=0.012, prediction_type="epsilon", clip_sample=False)


def build_tiny_diffusion(resolution: int) -> FrozenDiffusion:
    from transformers import CLIPTextModel

    text = CLIPTextModel(tiny_clip_text_config())
    return FrozenDiffusion(tiny_vae(resolution), text, tiny_unet(text.config.hidden_size, resolution // 8),
                           sd_scheduler())


def build_stage1(preset: str, *, num_queries: int = 77, resolution: int, florence_path: str | None = None,
                 sd_path: str | None = None, train_vision_tower: bool = False,
                 seed: int = 0) -> tuple[VLVEncoder, FrozenDiffusion]:
    """(trainable encoder, frozen decoder). Tiny weights are a pure function of `seed`."""
    from transformers import Florence2ForConditionalGeneration

    if preset == "tiny":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            florence = Florence2ForConditionalGeneration(tiny_florence2_config()).model
            decoder = build_tiny_diffusion(resolution)
            encoder = VLVEncoder(florence, TINY_PROMPT_IDS, image_size=resolution, num_queries=num_queries,
                                 out_dim=decoder.hidden_size, train_vision_tower=train_vision_tower)
        return encoder, decoder
    if preset == "paper":
        if florence_path is None:
            raise ModelBuildError("model.florence: required for preset 'paper' (a local path or hub id)")
        if sd_path is None:
            raise ModelBuildError("model.stable_diffusion: required for preset 'paper' (a local path or hub id)")
        from transformers import AutoTokenizer

        decoder = FrozenDiffusion.from_pretrained(sd_path)
        florence = Florence2ForConditionalGeneration.from_pretrained(florence_path).model
        prompt_ids = AutoTokenizer.from_pretrained(florence_path)(MORE_DETAILED_CAPTION)["input_ids"]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            encoder = VLVEncoder(florence, prompt_ids, image_size=PAPER_FLORENCE_IMAGE_SIZE,
                                 num_queries=num_queries, out_dim=decoder.hidden_size,
                                 train_vision_tower=train_vision_tower)
        return encoder, decoder
    raise ModelBuildError(f"model.preset: got {preset!r}, expected one of {', '.join(PRESETS)}")
