"""The caption decoder: an MLP projector ψ and any causal LM, prefixed with the caption
embeddings (after SD's frozen CLIP text encoder), learning to write the caption.

Every caption ends with the LM's end-of-text token, and that token is a target: the
model learns to stop. (The public VLV code masks the pad token, which for Qwen2.5 *is*
end-of-text, so its model never learns to stop.) Padding is masked by position, not by
token id, so an end-of-text that doubles as the pad token is still learned.
"""
from __future__ import annotations

import torch
from torch import nn

IGNORE = -100  # labels the loss skips: the prefix and padding


class Captioner(nn.Module):
    def __init__(self, llm, tokenizer, *, prefix_dim: int, max_caption_tokens: int = 300):
        super().__init__()
        hidden = llm.config.hidden_size
        self.llm = llm
        self.projector = nn.Sequential(nn.Linear(prefix_dim, hidden), nn.GELU(), nn.Linear(hidden, hidden))
        self.tokenizer = tokenizer  # not a module: no weights
        self.max_caption_tokens = max_caption_tokens
        if tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer has no end-of-text (eos) token; captions could never end")
        self.eos_id = tokenizer.eos_token_id
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_id

    @classmethod
    def from_llm(cls, path: str, *, prefix_dim: int, max_caption_tokens: int = 300,
                 dtype: torch.dtype = torch.float32) -> "Captioner":
        """A pretrained LM (e.g. Qwen/Qwen2.5-3B) and its tokenizer, from a path or hub id."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        llm = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
        return cls(llm, AutoTokenizer.from_pretrained(path), prefix_dim=prefix_dim,
                   max_caption_tokens=max_caption_tokens)

    def targets(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(token ids [B, T] right-padded, mask [B, T]): each caption cut to the limit, then end-of-text."""
        ids = [self.tokenizer(c, add_special_tokens=False)["input_ids"][:self.max_caption_tokens - 1] + [self.eos_id]
               for c in captions]
        width = max(len(x) for x in ids)
        tokens = torch.full((len(ids), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(ids), width), dtype=torch.long)
        for i, x in enumerate(ids):
            tokens[i, :len(x)] = torch.tensor(x)
            mask[i, :len(x)] = 1
        return tokens, mask

    def inputs(self, prefix_embeds: torch.Tensor, captions: list[str]):
        """(inputs_embeds, attention_mask, labels) for teacher forcing: prefix ++ caption ++ eos."""
        return self.inputs_from_tokens(prefix_embeds, *self.targets(captions))

    def inputs_from_tokens(self, prefix_embeds: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor):
        """`inputs` for captions already tokenized (`targets`' output; the step benchmark's path)."""
        prefix = self.projector(prefix_embeds.to(self.projector[0].weight.dtype))
        b, n = prefix.shape[:2]
        tokens, mask = tokens.to(prefix.device), mask.to(prefix.device)
        embeds = torch.cat([prefix, self.llm.get_input_embeddings()(tokens).to(prefix.dtype)], dim=1)
        attention = torch.cat([torch.ones((b, n), dtype=mask.dtype, device=mask.device), mask], dim=1)
        labels = torch.cat([torch.full((b, n), IGNORE, dtype=torch.long, device=tokens.device),
                            tokens.masked_fill(mask == 0, IGNORE)], dim=1)
        return embeds, attention, labels

    def loss(self, prefix_embeds: torch.Tensor, captions: list[str]) -> torch.Tensor:
        """Mean cross-entropy over caption tokens and end-of-text (the LM shifts labels itself)."""
        return self.loss_from_tokens(prefix_embeds, *self.targets(captions))

    def loss_from_tokens(self, prefix_embeds: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        embeds, attention, labels = self.inputs_from_tokens(prefix_embeds, tokens, mask)
        return self.llm(inputs_embeds=embeds, attention_mask=attention, labels=labels).loss

    @torch.no_grad()
    def generate(self, prefix_embeds: torch.Tensor, *, max_new_tokens: int = 300, num_beams: int = 1,
                 do_sample: bool = False, temperature: float = 1.0, top_p: float = 1.0,
                 synced_gpus: bool = False) -> list[str]:
        """Captions for a batch of prefixes; each stops at end-of-text (or max_new_tokens)."""
        prefix = self.projector(prefix_embeds.to(self.projector[0].weight.dtype))
        attention = torch.ones(prefix.shape[:2], dtype=torch.long, device=prefix.device)
        kw = {"do_sample": True, "temperature": temperature, "top_p": top_p} if do_sample else {"do_sample": False}
        out = self.llm.generate(inputs_embeds=prefix, attention_mask=attention, max_new_tokens=max_new_tokens,
                                num_beams=num_beams, eos_token_id=self.eos_id, pad_token_id=self.pad_id,
                                synced_gpus=synced_gpus, **kw)
        return [t.strip() for t in self.tokenizer.batch_decode(out, skip_special_tokens=True)]


# ---------------------------------------------------------------------------- tiny preset

TINY_WORDS = ("a an the and on of with in large small big dark light background red green blue yellow "
              "purple white black orange grey circle square triangle circles squares triangles shape shapes "
              "one two three").split()


def word_tokenizer(words: list[str] | tuple[str, ...]):
    """A word-level tokenizer built here (no download): one id per word, end-of-text doubling as pad."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<|endoftext|>": 0, "<unk>": 1, **{w: i + 2 for i, w in enumerate(words)}}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>",
                                   unk_token="<unk>")


def tiny_tokenizer():
    """The synthetic captions' words (vlv_ray/data/synthetic.py)."""
    return word_tokenizer(TINY_WORDS)


def tiny_captioner(prefix_dim: int, seed: int = 0, max_caption_tokens: int = 300, *, tokenizer=None,
                   max_positions: int = 512) -> Captioner:
    """Qwen2's class with a tiny config; the weights are a pure function of `seed`."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tokenizer = tokenizer or tiny_tokenizer()
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=max_positions,
                         tie_word_embeddings=True, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=None)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return Captioner(Qwen2ForCausalLM(config), tokenizer, prefix_dim=prefix_dim,
                         max_caption_tokens=max_caption_tokens)
