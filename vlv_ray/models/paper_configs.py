"""The published configs of the `paper` preset's models, written out so the architectures
can be built (on the meta device, no weights) on machines that cannot reach the model hub.

Only architecture fields are copied; bookkeeping keys (`_class_name`, `architectures`,
`torch_dtype`, `transformers_version`, ...) are left out. `tests/models/test_params.py`
checks the parameter counts these configs give against the published model sizes.
"""
from __future__ import annotations

# Florence-2-large in transformers' native layout (Florence2ForConditionalGeneration).
# Values: microsoft/Florence-2-large config.json (vision_config: dim_embed [256, 512, 1024,
# 2048], num_heads/num_groups [8, 16, 32, 64], depths [1, 1, 9, 1], window_size 12,
# projection_dim 1024, image_pos_embed.max_pos_embeddings 50, visual_temporal_embedding
# .max_temporal_embeddings 100; text_config: the BART-large-shaped Florence2LanguageConfig),
# mapped onto the native keys the way huggingface/transformers
# src/transformers/models/florence2/convert_florence2_original_pytorch_to_hf.py does
# (florence-community/Florence-2-large): dim_embed → embed_dim, an `<image>` token appended
# to the 51,289-token vocabulary (id 51289) and the embeddings padded to a multiple of 64,
# i.e. vocab_size 51,328 (the same figure the converted Florence-2-base config reports).
FLORENCE2_LARGE = {
    "vision_config": {
        "model_type": "florence_vision",
        "in_channels": 3,
        "depths": [1, 1, 9, 1],
        "patch_size": [7, 3, 3, 3],
        "patch_stride": [4, 2, 2, 2],
        "patch_padding": [3, 1, 1, 1],
        "patch_prenorm": [False, True, True, True],
        "embed_dim": [256, 512, 1024, 2048],
        "num_heads": [8, 16, 32, 64],
        "num_groups": [8, 16, 32, 64],
        "window_size": 12,
        "drop_path_rate": 0.1,
        "mlp_ratio": 4.0,
        "qkv_bias": True,
        "activation_function": "gelu",
        "projection_dim": 1024,
        "max_temporal_embeddings": 100,
        "max_position_embeddings": 50,
    },
    "text_config": {
        "model_type": "bart",
        "vocab_size": 51328,
        "d_model": 1024,
        "encoder_layers": 12,
        "decoder_layers": 12,
        "encoder_attention_heads": 16,
        "decoder_attention_heads": 16,
        "encoder_ffn_dim": 4096,
        "decoder_ffn_dim": 4096,
        "max_position_embeddings": 1024,
        "activation_function": "gelu",
        "dropout": 0.1,
        "attention_dropout": 0.1,
        "activation_dropout": 0.1,
        "encoder_layerdrop": 0.0,
        "decoder_layerdrop": 0.0,
        "init_std": 0.02,
        "scale_embedding": False,
        "pad_token_id": 1,
        "bos_token_id": 0,
        "eos_token_id": 2,
        "decoder_start_token_id": 2,
        "forced_bos_token_id": 0,
        "forced_eos_token_id": 2,
    },
    "image_token_id": 51289,
    "tie_word_embeddings": True,  # lm_head shares the token embeddings
}

# Florence-2-base, the same mapping from microsoft/Florence-2-base config.json (dim_embed
# [128, 256, 512, 1024], heads/groups [4, 8, 16, 32], projection_dim 768; BART-base text:
# d_model 768, 6 + 6 layers, 12 heads, ffn 3072).
FLORENCE2_BASE = {
    **FLORENCE2_LARGE,
    "vision_config": {**FLORENCE2_LARGE["vision_config"], "embed_dim": [128, 256, 512, 1024],
                      "num_heads": [4, 8, 16, 32], "num_groups": [4, 8, 16, 32], "projection_dim": 768},
    "text_config": {**FLORENCE2_LARGE["text_config"], "d_model": 768, "encoder_layers": 6, "decoder_layers": 6,
                    "encoder_attention_heads": 12, "decoder_attention_heads": 12, "encoder_ffn_dim": 3072,
                    "decoder_ffn_dim": 3072},
}

# Stable Diffusion 2.1-base (stabilityai/stable-diffusion-2-1-base), unet/config.json.
# SD 2.1 (768) differs only in sample_size 96 and upcast_attention true.
SD21_BASE_UNET = {
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
    "center_input_sample": False,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "only_cross_attention": False,
    "block_out_channels": [320, 640, 1280, 1280],
    "layers_per_block": 2,
    "downsample_padding": 1,
    "mid_block_scale_factor": 1,
    "act_fn": "silu",
    "norm_num_groups": 32,
    "norm_eps": 1e-05,
    "cross_attention_dim": 1024,
    "attention_head_dim": [5, 10, 20, 20],  # diffusers' name for the number of heads
    "dual_cross_attention": False,
    "use_linear_projection": True,
    "num_class_embeds": None,
    "upcast_attention": False,
}

# stabilityai/stable-diffusion-2-1-base, vae/config.json (the SD 2.x KL-f8 autoencoder).
SD21_BASE_VAE = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "block_out_channels": [128, 256, 512, 512],
    "layers_per_block": 2,
    "act_fn": "silu",
    "latent_channels": 4,
    "norm_num_groups": 32,
    "sample_size": 768,
    "scaling_factor": 0.18215,
}

# stabilityai/stable-diffusion-2-1-base, text_encoder/config.json: OpenCLIP ViT-H/14's text
# tower as a transformers CLIPTextModel, its last of 24 layers dropped (SD 2 conditions on
# the penultimate layer), so 23 layers of width 1024.
SD21_BASE_TEXT_ENCODER = {
    "vocab_size": 49408,
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_hidden_layers": 23,
    "num_attention_heads": 16,
    "max_position_embeddings": 77,
    "hidden_act": "gelu",
    "layer_norm_eps": 1e-05,
    "attention_dropout": 0.0,
    "dropout": 0.0,
    "initializer_range": 0.02,
    "initializer_factor": 1.0,
    "projection_dim": 512,
    "pad_token_id": 1,
    "bos_token_id": 0,
    "eos_token_id": 2,
}

# Qwen/Qwen2.5-3B config.json (base model; the paper's default caption decoder).
QWEN2_5_3B = {
    "vocab_size": 151936,
    "hidden_size": 2048,
    "intermediate_size": 11008,
    "num_hidden_layers": 36,
    "num_attention_heads": 16,
    "num_key_value_heads": 2,
    "hidden_act": "silu",
    "max_position_embeddings": 32768,
    "initializer_range": 0.02,
    "rms_norm_eps": 1e-06,
    "rope_theta": 1000000.0,
    "use_sliding_window": False,
    "sliding_window": 32768,
    "max_window_layers": 36,
    "attention_dropout": 0.0,
    "tie_word_embeddings": True,
    "bos_token_id": 151643,
    "eos_token_id": 151643,
}

# The smaller Qwen2.5 base models the paper also reports (Qwen/Qwen2.5-1.5B and
# Qwen/Qwen2.5-0.5B config.json): same family, only these fields differ from 3B.
QWEN2_5_1_5B = {**QWEN2_5_3B, "hidden_size": 1536, "intermediate_size": 8960, "num_hidden_layers": 28,
                "num_attention_heads": 12, "max_window_layers": 28, "sliding_window": 32768}
QWEN2_5_0_5B = {**QWEN2_5_3B, "hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24,
                "num_attention_heads": 14, "max_window_layers": 24, "sliding_window": 32768}

# Hub id → config, for the models a paper job may name. Any other id needs a local directory
# (see presets.paper_configs_for).
FLORENCE2_IDS = {"microsoft/Florence-2-large": FLORENCE2_LARGE, "florence-community/Florence-2-large": FLORENCE2_LARGE,
                 "microsoft/Florence-2-base": FLORENCE2_BASE, "florence-community/Florence-2-base": FLORENCE2_BASE}
SD_IDS = {"stabilityai/stable-diffusion-2-1-base": (SD21_BASE_VAE, SD21_BASE_TEXT_ENCODER, SD21_BASE_UNET)}
LLM_IDS = {"Qwen/Qwen2.5-3B": QWEN2_5_3B, "Qwen/Qwen2.5-1.5B": QWEN2_5_1_5B, "Qwen/Qwen2.5-0.5B": QWEN2_5_0_5B}
