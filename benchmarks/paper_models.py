"""Model directories for benchmarks/bench_train.py, with no model hub: the paper preset's
models at their published sizes (vlv_ray/models/paper_configs.py) with random weights,
saved where `model.florence`, `model.stable_diffusion` and `model.llm` can name them, and
word-level stand-in tokenizers (throughput depends on token counts, not on which tokens).
"""
from __future__ import annotations

from pathlib import Path

import torch

DONE = "vlv-bench-complete"  # written last: a directory without it is rebuilt


def _fresh(path: Path) -> bool:
    return not (path / DONE).is_file()


def _mark(path: Path) -> str:
    (path / DONE).write_text("random weights from the published config (benchmarks/paper_models.py)\n")
    return str(path)


def clip_tokenizer():
    """A CLIPTokenizer over single byte-level characters: SD's empty prompt is <start> <end> + padding."""
    from transformers import CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    chars = list(bytes_to_unicode().values())
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    vocab.update({"<|startoftext|>": len(vocab), "<|endoftext|>": len(vocab) + 1})
    return CLIPTokenizer(vocab=vocab, merges=[])


def qwen_tokenizer(words):
    """A Qwen2Tokenizer (byte-level BPE, as the LLM directory's model type makes AutoTokenizer
    build) trained here on `words`, so each word, with or without its leading space, is one token."""
    import json

    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=4096, special_tokens=["<|endoftext|>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator([" " + " ".join(words)] * 4 + list(words), trainer=trainer)
    model = json.loads(bpe.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    return Qwen2Tokenizer(vocab=model["vocab"], merges=merges, unk_token=None, eos_token="<|endoftext|>",
                          pad_token="<|endoftext|>", bos_token=None)


def save_tiny_sd(path: Path, resolution: int) -> str:
    """The tiny preset's frozen SD (seed 0, as a tiny job builds it) as a directory: the latent
    cache is made with it, and its VAE digest matches the job's."""
    from vlv_ray.models.presets import build_stage1

    path = Path(path)
    if _fresh(path):
        _, decoder = build_stage1("tiny", resolution=resolution, seed=0)
        decoder.save_pretrained(path)
    return _mark(path)


def build(root: Path, device: str = "cuda") -> dict[str, str]:
    """{"florence", "stable_diffusion", "llm"}: directories under `root` (built once)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import (AutoModelForCausalLM, CLIPTextConfig, CLIPTextModel, Florence2Config,
                              Florence2ForConditionalGeneration, Qwen2Config)

    from vlv_ray.models import paper_configs as pc
    from vlv_ray.models.captioner import TINY_WORDS, word_tokenizer
    from vlv_ray.models.decoder import FrozenDiffusion
    from vlv_ray.models.encoder import MORE_DETAILED_CAPTION
    from vlv_ray.models.presets import sd_scheduler

    root = Path(root)
    out = {"florence": root / "florence-2-large", "stable_diffusion": root / "sd-2-1-base", "llm": root / "qwen2.5-3b"}
    words = sorted(set(TINY_WORDS) | set(MORE_DETAILED_CAPTION.replace(".", " .").split()))
    with torch.device(device):  # random init on the GPU: seconds, not minutes
        if _fresh(out["florence"]):
            model = Florence2ForConditionalGeneration(Florence2Config.from_dict(pc.FLORENCE2_LARGE))
            model.to(torch.bfloat16).save_pretrained(out["florence"])
            word_tokenizer(words).save_pretrained(out["florence"])
            del model
        if _fresh(out["stable_diffusion"]):
            decoder = FrozenDiffusion(AutoencoderKL.from_config(pc.SD21_BASE_VAE),
                                      CLIPTextModel(CLIPTextConfig.from_dict(pc.SD21_BASE_TEXT_ENCODER)),
                                      UNet2DConditionModel.from_config(pc.SD21_BASE_UNET), sd_scheduler())
            decoder.save_pretrained(out["stable_diffusion"])
            clip_tokenizer().save_pretrained(out["stable_diffusion"] / "tokenizer")
            del decoder
        if _fresh(out["llm"]):
            llm = AutoModelForCausalLM.from_config(Qwen2Config.from_dict(pc.QWEN2_5_3B))
            llm.to(torch.bfloat16).save_pretrained(out["llm"])
            qwen_tokenizer(TINY_WORDS).save_pretrained(out["llm"])
            del llm
    if device == "cuda":
        torch.cuda.empty_cache()
    return {k: _mark(v) for k, v in out.items()}
