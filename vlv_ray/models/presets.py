"""Model presets: `paper` (real weights from a path or hub id) and `tiny` (same classes,
tiny configs, random weights: tests and the demo).

Either preset also builds from configs alone on the meta device (`build_stage1(...,
empty=True)`, `param_counts`): the paper models' published configs are written out in
`paper_configs`, so sizes and trainable counts need no weights and no hub access.

Tiny keeps SD 2.1-base's structure where it matters to the method: CLIP text with GELU and
77 positions, a UNet whose cross-attention width is the CLIP width, linear projections in
its transformer blocks, a 4-channel VAE at 1/8 resolution with scaling factor 0.18215,
and an epsilon-prediction DDPM schedule with SD's scaled-linear betas.
"""
from __future__ import annotations

import torch

from vlv_ray.models.decoder import FrozenDiffusion
from vlv_ray.models.encoder import MORE_DETAILED_CAPTION, VLVEncoder

PRESETS = ("tiny", "paper", "toy")
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


def sd_scheduler(prediction_type: str = "epsilon"):
    """SD 2.x's DDPM schedule; "v_prediction" is the 768 px SD 2.1's objective."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085,
                         beta_end=0.012, prediction_type=prediction_type, clip_sample=False)


def build_tiny_diffusion(resolution: int) -> FrozenDiffusion:
    from transformers import CLIPTextModel

    text = CLIPTextModel(tiny_clip_text_config())
    return FrozenDiffusion(tiny_vae(resolution), text, tiny_unet(text.config.hidden_size, resolution // 8),
                           sd_scheduler())


def build_stage1(preset: str, *, num_queries: int = 77, resolution: int, florence_path: str | None = None,
                 sd_path: str | None = None, train_vision_tower: bool = False,
                 seed: int = 0, empty: bool = False, device: str = "meta") -> tuple[VLVEncoder, FrozenDiffusion]:
    """(trainable encoder, frozen decoder). Tiny weights are a pure function of `seed`.

    `empty=True`: the same modules built from configs alone (no weights read, no
    download) on `device`: the meta device (nothing allocated: shapes and parameter
    counts only), or a real one, randomly initialised (the step benchmark at paper sizes).
    """
    from transformers import Florence2ForConditionalGeneration

    if empty:
        return _build_stage1_empty(preset, num_queries=num_queries, resolution=resolution,
                                   florence_path=florence_path, sd_path=sd_path,
                                   train_vision_tower=train_vision_tower, seed=seed, device=device)
    if preset == "tiny":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            florence = Florence2ForConditionalGeneration(tiny_florence2_config()).model
            decoder = build_tiny_diffusion(resolution)
            encoder = VLVEncoder(florence, TINY_PROMPT_IDS, image_size=resolution, num_queries=num_queries,
                                 out_dim=decoder.hidden_size, train_vision_tower=train_vision_tower)
        return encoder, decoder
    if preset == "toy":  # the miniature world: the committed teacher + a small encoder (vlv_ray/toyworld)
        from vlv_ray.toyworld import models as toy

        return toy.build_stage1(num_queries=num_queries, resolution=resolution, sd_path=sd_path,
                                train_vision_tower=train_vision_tower, seed=seed)
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


def _build_stage1_empty(preset: str, *, num_queries: int, resolution: int, florence_path: str | None,
                        sd_path: str | None, train_vision_tower: bool, seed: int, device: str):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, Florence2ForConditionalGeneration

    if preset == "toy":  # small enough to build for real (the teacher's weights are in the package)
        return build_stage1("toy", num_queries=num_queries, resolution=resolution, sd_path=sd_path,
                            train_vision_tower=train_vision_tower, seed=seed)
    if preset == "tiny":
        with torch.device(device):
            return build_stage1("tiny", num_queries=num_queries, resolution=resolution,
                                train_vision_tower=train_vision_tower, seed=seed)
    if preset != "paper":
        raise ModelBuildError(f"model.preset: got {preset!r}, expected one of {', '.join(PRESETS)}")
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


def build_caption_model_empty(cfg_model, encoder, text_encoder, *, seed: int = 0, device: str = "meta"):
    """Stage 2's CaptionModel from configs alone, on `device` (see build_stage1)."""
    from types import SimpleNamespace

    from transformers import AutoModelForCausalLM

    from vlv_ray.models.captioner import Captioner, tiny_captioner
    from vlv_ray.models.caption_model import CaptionModel

    prefix_dim = text_encoder.config.hidden_size
    if cfg_model.preset == "tiny":
        with torch.device(device):
            captioner = tiny_captioner(prefix_dim=prefix_dim, seed=seed)
    elif cfg_model.preset == "toy":
        from vlv_ray.toyworld.models import toy_captioner

        captioner = toy_captioner(prefix_dim=prefix_dim, seed=seed)
    else:
        config = paper_configs_for(llm=cfg_model.llm)["llm"][0]
        # No tokenizer offline: the config's token ids stand in (a meta model never tokenizes).
        tokenizer = SimpleNamespace(eos_token_id=config.eos_token_id, pad_token_id=config.pad_token_id)
        with torch.device(device):
            captioner = Captioner(AutoModelForCausalLM.from_config(config), tokenizer, prefix_dim=prefix_dim)
    return CaptionModel(encoder, text_encoder, captioner, train_encoder=cfg_model.train_encoder)


# ---------------------------------------------------------------------------- parameter counts

# (parameter-name prefix, module) in the order a table lists them. Parameters shared by
# several modules count once, under the first name they have (the token embeddings are
# shared by Florence's encoder, decoder and its tied lm_head; the lm_head itself is not
# kept: VLVEncoder holds Florence2Model, which has none).
ENCODER_PARTS = (("florence.vision_tower.", "vision_tower"), ("florence.multi_modal_projector.", "vision_projector"),
                 ("florence.language_model.shared.", "token_embeddings"),
                 ("florence.language_model.encoder.", "language_encoder"),
                 ("florence.language_model.decoder.", "language_decoder"), ("queries", "queries"), ("proj.", "phi"))
DECODER_PARTS = (("vae.", "vae"), ("text_encoder.", "text_encoder"), ("unet.", "unet"))
CAPTION_PARTS = tuple((f"encoder.{p}", n) for p, n in ENCODER_PARTS) + (
    ("text_encoder.", "text_encoder"), ("captioner.projector.", "psi"), ("captioner.llm.", "llm"))

MODULE_DESCRIPTIONS = {
    "vision_tower": "Florence-2 DaViT vision tower",
    "vision_projector": "Florence-2 image projection + position embeddings",
    "token_embeddings": "Florence-2 token embeddings (encoder, decoder, tied lm_head)",
    "language_encoder": "Florence-2 language encoder",
    "language_decoder": "Florence-2 language decoder (runs the queries)",
    "queries": "learnable queries",
    "phi": "φ: MLP to the CLIP text width",
    "vae": "SD VAE",
    "text_encoder": "SD CLIP text encoder",
    "unet": "SD UNet",
    "psi": "ψ: MLP from CLIP text states to the LLM width",
    "llm": "causal LM (caption decoder)",
}


def count_parts(module: torch.nn.Module, parts) -> dict[str, dict[str, int]]:
    """{name: {"total", "trainable"}} by parameter-name prefix; "other" for any unmatched."""
    out = {name: {"total": 0, "trainable": 0} for _, name in parts}
    for pname, p in module.named_parameters():  # each shared tensor once
        name = next((n for prefix, n in parts if pname.startswith(prefix)), "other")
        row = out.setdefault(name, {"total": 0, "trainable": 0})
        row["total"] += p.numel()
        row["trainable"] += p.numel() if p.requires_grad else 0
    return out


def param_counts(cfg) -> dict:
    """Parameter counts of a job's models, built from configs alone on the meta device.

    {"modules": {name: {"total", "trainable"}}, "total", "trainable", "configs": {model:
    source}}. Trainable follows the training build: stage 1 trains Florence's language
    model, the queries and φ (the vision tower only with model.train_vision_tower); stage 2
    trains ψ, the LLM and, with model.train_encoder, the encoder's trainable parts. SD is
    frozen throughout. Stage 2's encoder flags come from the job (a real run takes them
    from the stage-1 export).
    """
    m = cfg.model
    encoder, decoder = build_stage1(m.preset, num_queries=m.num_queries, resolution=cfg.data.resolution,
                                    florence_path=m.florence, sd_path=m.stable_diffusion,
                                    train_vision_tower=m.train_vision_tower, seed=cfg.seed, empty=True)
    if cfg.stage == 1:
        modules = {**count_parts(encoder, ENCODER_PARTS), **count_parts(decoder, DECODER_PARTS)}
    else:
        model = build_caption_model_empty(m, encoder, decoder.text_encoder, seed=cfg.seed)
        modules = count_parts(model, CAPTION_PARTS)
    if m.preset == "tiny":
        configs = {"all": "tiny preset (vlv_ray.models.presets)"}
    elif m.preset == "toy":
        configs = {"all": "toy preset (vlv_ray.toyworld.models; teacher from model.stable_diffusion or the package)"}
    else:
        srcs = paper_configs_for(m.florence, m.stable_diffusion, m.llm if cfg.stage == 2 else None)
        configs = {k: v[1] for k, v in srcs.items() if cfg.stage == 2 or k != "llm"}
    return {"modules": modules, "total": sum(r["total"] for r in modules.values()),
            "trainable": sum(r["trainable"] for r in modules.values()), "configs": configs}


def _short(n: int) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.{2 if unit == 'B' else 1}f}{unit}"
    return str(n)


def format_param_counts(counts: dict) -> str:
    """A readable table of `param_counts`: module, total, trainable (in K/M/B), exact total."""
    rows = [(name, _short(r["total"]), _short(r["trainable"]), f"{r['total']:,}", MODULE_DESCRIPTIONS.get(name, ""))
            for name, r in counts["modules"].items()]
    rows.append(("total", _short(counts["total"]), _short(counts["trainable"]), f"{counts['total']:,}", ""))
    head = ("module", "total", "trainable", "parameters", "")
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(4)]

    def line(r):
        return (f"{r[0]:<{widths[0]}}  {r[1]:>{widths[1]}}  {r[2]:>{widths[2]}}  {r[3]:>{widths[3]}}  {r[4]}").rstrip()

    rule = "-" * (sum(widths) + 6)
    return "\n".join([line(head), rule, *map(line, rows[:-1]), rule, line(rows[-1])])
