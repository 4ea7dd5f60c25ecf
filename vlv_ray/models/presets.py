"""Model presets: `tiny` (same classes as the paper, tiny configs, random weights: tests and
benches) and `paper` (real weights from a path or hub id), registered in the preset registry
(`vlv_ray/registry.py`) like any package's (the miniature world's `toy`:
`vlv_ray/toyworld/presets.py`); `build_stage1` and `build_captioner` build a job's models
through it, whatever package registered them.

Every preset also builds from configs alone on the meta device (`build_stage1(...,
empty=True)`, `param_counts`): the paper models' published configs are written out in
`paper_configs`, so sizes and trainable counts need no weights and no hub access.

Tiny keeps SD 2.1-base's structure where it matters to the method: CLIP text with GELU and
77 positions, a UNet whose cross-attention width is the CLIP width, linear projections in
its transformer blocks, a 4-channel VAE at 1/8 resolution with scaling factor 0.18215,
and an epsilon-prediction DDPM schedule with SD's scaled-linear betas.

Nothing heavy is imported at module level: `config check` validates a job's preset
through the registry, which imports this module, and stays fast.
"""
from __future__ import annotations

from vlv_ray.registry import ModelBuildError, Preset, get_preset, preset_names, register_preset  # noqa: F401 (API)
from vlv_ray.typed import ConfigError

PAPER_FLORENCE_IMAGE_SIZE = 768  # Florence-2's processor input size
TINY_IMAGE_TOKEN_ID = 63
TINY_PROMPT_IDS = [0, 10, 11, 12, 13, 2]  # <s> four prompt tokens </s>; no tokenizer needed


def build_stage1(preset: str, *, num_queries: int = 77, resolution: int, florence_path: str | None = None,
                 sd_path: str | None = None, train_vision_tower: bool = False,
                 seed: int = 0, empty: bool = False, device: str = "meta") -> tuple:
    """(trainable encoder, frozen decoder) of `preset`. Tiny and toy weights are a pure function of `seed`.

    `empty=True`: the same modules built from configs alone (no weights read, no
    download) on `device`: the meta device (nothing allocated: shapes and parameter
    counts only), or a real one, randomly initialised (the step benchmark at paper sizes).
    """
    return get_preset(preset).build_stage1(num_queries=num_queries, resolution=resolution,
                                           florence_path=florence_path, sd_path=sd_path,
                                           train_vision_tower=train_vision_tower, seed=seed, empty=empty,
                                           device=device)


def build_captioner(cfg_model, *, prefix_dim: int, seed: int = 0, empty: bool = False, device: str = "meta"):
    """Stage 2's caption decoder for `cfg_model.preset` (a `ModelConfig` or an export's meta)."""
    return get_preset(cfg_model.preset).build_captioner(cfg_model, prefix_dim=prefix_dim, seed=seed, empty=empty,
                                                        device=device)


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


def sd_scheduler(prediction_type: str = "epsilon"):
    """SD 2.x's DDPM schedule; "v_prediction" is the 768 px SD 2.1's objective."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085,
                         beta_end=0.012, prediction_type=prediction_type, clip_sample=False)


def build_tiny_diffusion(resolution: int):
    from transformers import CLIPTextModel

    from vlv_ray.models.decoder import FrozenDiffusion

    text = CLIPTextModel(tiny_clip_text_config())
    return FrozenDiffusion(tiny_vae(resolution), text, tiny_unet(text.config.hidden_size, resolution // 8),
                           sd_scheduler())


# ---------------------------------------------------------------------------- tiny


def _tiny_stage1(*, num_queries: int, resolution: int, florence_path: str | None, sd_path: str | None,
                 train_vision_tower: bool, seed: int, empty: bool, device: str):
    import torch
    from transformers import Florence2ForConditionalGeneration

    from vlv_ray.models.encoder import VLVEncoder

    if empty:  # the same seeded build, on `device`
        with torch.device(device):
            return _tiny_stage1(num_queries=num_queries, resolution=resolution, florence_path=None, sd_path=None,
                                train_vision_tower=train_vision_tower, seed=seed, empty=False, device=device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        florence = Florence2ForConditionalGeneration(tiny_florence2_config()).model
        decoder = build_tiny_diffusion(resolution)
        encoder = VLVEncoder(florence, TINY_PROMPT_IDS, image_size=resolution, num_queries=num_queries,
                             out_dim=decoder.hidden_size, train_vision_tower=train_vision_tower)
    return encoder, decoder


def _tiny_captioner(cfg_model, *, prefix_dim: int, seed: int, empty: bool, device: str):
    import torch

    from vlv_ray.models.captioner import tiny_captioner

    if empty:
        with torch.device(device):
            return tiny_captioner(prefix_dim=prefix_dim, seed=seed)
    return tiny_captioner(prefix_dim=prefix_dim, seed=seed)


register_preset("tiny", build_stage1=_tiny_stage1, build_captioner=_tiny_captioner,
                describe=lambda cfg: {"all": "tiny preset (vlv_ray.models.presets)"})


# ---------------------------------------------------------------------------- paper


def _paper_validate(cfg) -> None:
    for key in ("florence", "stable_diffusion") + (("llm",) if cfg.stage == 2 else ()):
        if getattr(cfg.model, key) is None:
            raise ConfigError(f"model.{key}: required for preset 'paper' (a local path or hub id)")


def _paper_stage1(*, num_queries: int, resolution: int, florence_path: str | None, sd_path: str | None,
                  train_vision_tower: bool, seed: int, empty: bool, device: str):
    import torch
    from transformers import AutoTokenizer, Florence2ForConditionalGeneration

    from vlv_ray.models.decoder import FrozenDiffusion
    from vlv_ray.models.encoder import MORE_DETAILED_CAPTION, VLVEncoder

    if empty:
        return _paper_stage1_empty(num_queries=num_queries, florence_path=florence_path, sd_path=sd_path,
                                   train_vision_tower=train_vision_tower, device=device)
    if florence_path is None:
        raise ModelBuildError("model.florence: required for preset 'paper' (a local path or hub id)")
    if sd_path is None:
        raise ModelBuildError("model.stable_diffusion: required for preset 'paper' (a local path or hub id)")
    decoder = FrozenDiffusion.from_pretrained(sd_path)
    florence = Florence2ForConditionalGeneration.from_pretrained(florence_path).model
    prompt_ids = AutoTokenizer.from_pretrained(florence_path)(MORE_DETAILED_CAPTION)["input_ids"]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        encoder = VLVEncoder(florence, prompt_ids, image_size=PAPER_FLORENCE_IMAGE_SIZE,
                             num_queries=num_queries, out_dim=decoder.hidden_size,
                             train_vision_tower=train_vision_tower)
    return encoder, decoder


def _paper_captioner(cfg_model, *, prefix_dim: int, seed: int, empty: bool, device: str):
    import torch

    from vlv_ray.models.captioner import Captioner

    if not empty:
        return Captioner.from_llm(cfg_model.llm, prefix_dim=prefix_dim)
    from types import SimpleNamespace

    from transformers import AutoModelForCausalLM

    config = paper_configs_for(llm=cfg_model.llm)["llm"][0]
    # No tokenizer offline: the config's token ids stand in (a meta model never tokenizes).
    tokenizer = SimpleNamespace(eos_token_id=config.eos_token_id, pad_token_id=config.pad_token_id)
    with torch.device(device):
        return Captioner(AutoModelForCausalLM.from_config(config), tokenizer, prefix_dim=prefix_dim)


def _paper_describe(cfg) -> dict[str, str]:
    m = cfg.model
    srcs = paper_configs_for(m.florence, m.stable_diffusion, m.llm if cfg.stage == 2 else None)
    return {k: v[1] for k, v in srcs.items() if cfg.stage == 2 or k != "llm"}


register_preset("paper", build_stage1=_paper_stage1, build_captioner=_paper_captioner, describe=_paper_describe,
                validate=_paper_validate)


# ---------------------------------------------------------------------------- configs alone
#
# The `paper` models' architectures without their weights: from the model directory when
# the job names a local one, else from the published configs in `paper_configs` (these
# machines cannot reach the hub). Built on the meta device, so nothing is allocated.

PAPER_FLORENCE = "florence-community/Florence-2-large"  # transformers-native format of microsoft/Florence-2-large
PAPER_SD = "stabilityai/stable-diffusion-2-1-base"
PAPER_LLM = "Qwen/Qwen2.5-3B"
# The real prompt ids come from Florence's tokenizer; a meta model never runs, so <s> </s>
# stand in (a buffer, not a parameter: counts are unaffected).
EMPTY_PROMPT_IDS = [0, 2]


def _resolve_config(key: str, path: str | None, default_id: str, known: dict, load_local, make,
                    files=("config.json",)):
    """(config, its source) for `path`: a local model directory, or a hub id known offline."""
    import copy
    from pathlib import Path

    local = Path(path).expanduser() if path and "://" not in path else None
    if local is not None and local.is_dir():
        missing = [f for f in files if not (local / f).is_file()]
        if missing:  # transformers would quietly fall back to its default config
            raise ModelBuildError(f"{key}: {local} is not a model directory (no {', '.join(missing)})")
        try:
            return load_local(str(local)), str(local)
        except (OSError, ValueError, TypeError, KeyError) as e:
            raise ModelBuildError(f"{key}: {local} has no usable config ({type(e).__name__}: "
                                  f"{str(e).splitlines()[0] if str(e) else ''})") from None
    name = path or default_id
    if name not in known:
        raise ModelBuildError(f"{key}: {name!r} is neither a local model directory nor a model whose config is "
                              f"known offline ({', '.join(known)})")
    return make(copy.deepcopy(known[name])), f"published config of {name}"


def paper_configs_for(florence: str | None = None, stable_diffusion: str | None = None,
                      llm: str | None = None) -> dict[str, tuple]:
    """{"florence": (Florence2Config, source), "stable_diffusion": ((vae, text, unet), source),
    "llm": (LLM config, source)} for a paper job's model paths; None means the paper's model."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import AutoConfig, CLIPTextConfig, Florence2Config, Qwen2Config

    from vlv_ray.models import paper_configs as pc

    def sd_local(path):
        return (AutoencoderKL.load_config(path, subfolder="vae"),
                CLIPTextConfig.from_pretrained(path, subfolder="text_encoder"),
                UNet2DConditionModel.load_config(path, subfolder="unet"))

    return {
        "florence": _resolve_config("model.florence", florence, PAPER_FLORENCE, pc.FLORENCE2_IDS,
                                    Florence2Config.from_pretrained, Florence2Config.from_dict),
        "stable_diffusion": _resolve_config("model.stable_diffusion", stable_diffusion, PAPER_SD, pc.SD_IDS,
                                            sd_local, lambda c: (c[0], CLIPTextConfig.from_dict(c[1]), c[2]),
                                            files=("vae/config.json", "text_encoder/config.json", "unet/config.json")),
        "llm": _resolve_config("model.llm", llm, PAPER_LLM, pc.LLM_IDS, AutoConfig.from_pretrained,
                               Qwen2Config.from_dict),
    }


def _paper_stage1_empty(*, num_queries: int, florence_path: str | None, sd_path: str | None,
                        train_vision_tower: bool, device: str):
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, Florence2ForConditionalGeneration

    from vlv_ray.models.decoder import FrozenDiffusion
    from vlv_ray.models.encoder import VLVEncoder

    cfgs = paper_configs_for(florence_path, sd_path, None)
    florence_cfg, (vae, text, unet) = cfgs["florence"][0], cfgs["stable_diffusion"][0]
    scheduler = sd_scheduler()  # plain tensors, no parameters: built off the meta device
    with torch.device(device):
        decoder = FrozenDiffusion(AutoencoderKL.from_config(vae), CLIPTextModel(text),
                                  UNet2DConditionModel.from_config(unet), scheduler)
        florence = Florence2ForConditionalGeneration(florence_cfg).model  # lm_head (tied) not kept
        encoder = VLVEncoder(florence, EMPTY_PROMPT_IDS, image_size=PAPER_FLORENCE_IMAGE_SIZE,
                             num_queries=num_queries, out_dim=decoder.hidden_size,
                             train_vision_tower=train_vision_tower)
    return encoder, decoder
