"""Parameter counts of a job's models, from configs alone on the meta device: `vlv-ray config
show --params`. The models come from the job's preset (`vlv_ray.models.presets`)."""
from __future__ import annotations

from vlv_ray.models.caption_model import build_caption_model
from vlv_ray.models.presets import build_stage1
from vlv_ray.registry import get_preset


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


def count_parts(module, parts) -> dict[str, dict[str, int]]:
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
        model = build_caption_model(m, encoder, decoder.text_encoder, seed=cfg.seed, empty=True)
        modules = count_parts(model, CAPTION_PARTS)
    configs = get_preset(m.preset).describe(cfg)
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
