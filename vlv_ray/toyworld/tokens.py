"""Tokenizers for the miniature world, built offline from the caption grammar's words.

- `clip_tokenizer()`: a real `CLIPTokenizer` (byte-pair merges that spell each word into
  one token, `<|startoftext|>`/`<|endoftext|>` as in CLIP), saved in the teacher's
  `tokenizer/` folder so it loads exactly like Stable Diffusion's.
- `lm_tokenizer()`: a word-level tokenizer for the caption LM, one id per word, with an
  end-of-text token that doubles as padding (as Qwen2's does).
"""
from __future__ import annotations

from vlv_ray.toyworld.world import WORDS

MAX_TEXT_TOKENS = 16  # the teacher's CLIP context: <start> + ≤ 9 words + <end>, padded


def clip_vocab() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """(vocab, merges): every character (alone and word-final), every word prefix, every word."""
    vocab: dict[str, int] = {}
    merges: list[tuple[str, str]] = []

    def add(token: str) -> None:
        vocab.setdefault(token, len(vocab))

    add("<|startoftext|>")
    add("<|endoftext|>")
    for c in sorted(set("".join(WORDS))):
        add(c)
        add(c + "</w>")
    # Merge left to right: (w0, w1) → w0w1, (w0w1, w2) → …, the last with </w>. BPE applies
    # the lowest-ranked pair first, so a short word's merge can split a longer one ("top"'s
    # (t, o) cut "bottom" into bot·to·m): the longest words' merges rank first.
    for w in sorted(WORDS, key=len, reverse=True):
        parts = list(w[:-1]) + [w[-1] + "</w>"]
        current = parts[0]
        for p in parts[1:]:
            if (current, p) not in merges:
                merges.append((current, p))
            current += p
            add(current)
    return vocab, merges


def clip_tokenizer():
    from transformers import CLIPTokenizer

    vocab, merges = clip_vocab()
    tok = CLIPTokenizer(vocab=vocab, merges=merges)
    tok.model_max_length = MAX_TEXT_TOKENS
    return tok


def lm_tokenizer():
    """The caption LM's word-level tokenizer over the world's words."""
    from vlv_ray.models.captioner import word_tokenizer

    return word_tokenizer(WORDS)
