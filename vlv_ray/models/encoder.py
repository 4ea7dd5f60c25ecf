"""The VLV encoder: image → Florence-2 → N learnable queries → MLP → caption embeddings.

The one implementation of the image-to-queries forward (the reference code has three).
Florence-2 (transformers' native `Florence2Model`) encodes the image and the task prompt:
image features from the DaViT tower + projector are placed at the image-token positions
of the prompt, exactly as Florence's processor lays them out (`<image>` × T, then
`<s> prompt </s>`), and run through the language encoder. The queries then go through
the language decoder as `inputs_embeds`, cross-attending to those states (causal
self-attention among queries, as in the paper), and φ maps them to the CLIP text width.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# Florence-2's image processor normalises with the ImageNet statistics.
IMAGE_MEAN = (0.485, 0.456, 0.406)
IMAGE_STD = (0.229, 0.224, 0.225)
# What Florence's processor expands the <MORE_DETAILED_CAPTION> task token into.
MORE_DETAILED_CAPTION = "Describe with a paragraph what is shown in the image."


def num_image_tokens(vision_config, image_size: int) -> int:
    """Tokens the projector emits for a square image: the DaViT grid + 1 pooled token."""
    side = image_size
    for k, s, p in zip(vision_config.patch_size, vision_config.patch_stride, vision_config.patch_padding):
        side = (side + 2 * p - k) // s + 1
    return side * side + 1


class VLVEncoder(nn.Module):
    def __init__(self, florence_model, prompt_ids: list[int], *, image_size: int, num_queries: int,
                 out_dim: int, train_vision_tower: bool = False):
        super().__init__()
        cfg = florence_model.config
        self.florence = florence_model  # Florence2Model: vision tower, projector, BART language model
        self.image_size, self.image_token_id = image_size, cfg.image_token_id
        self.train_vision_tower = train_vision_tower
        self.tower_input = "fp32"  # model.tower_input (speed.apply sets it)
        d = cfg.text_config.d_model
        n_img = num_image_tokens(cfg.vision_config, image_size)
        ids = torch.tensor([cfg.image_token_id] * n_img + list(prompt_ids), dtype=torch.long)
        # Derived from the config, so not saved: a checkpoint holds learned weights only.
        self.register_buffer("prompt_ids", ids[None], persistent=False)
        self.register_buffer("mean", torch.tensor(IMAGE_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGE_STD).view(1, 3, 1, 1), persistent=False)
        # std 0.02 = the BART decoder's own init scale, so the queries start where token
        # embeddings live and the decoder's layernorm_embedding sees familiar magnitudes.
        self.queries = nn.Parameter(torch.randn(1, num_queries, d) * cfg.text_config.init_std)
        self.proj = nn.Sequential(nn.Linear(d, out_dim), nn.GELU(), nn.Linear(out_dim, out_dim))
        vision = (self.florence.vision_tower, self.florence.multi_modal_projector)
        for m in vision:
            m.requires_grad_(train_vision_tower)

    def train(self, mode: bool = True) -> "VLVEncoder":
        super().train(mode)
        if not self.train_vision_tower:  # a frozen tower stays in eval mode (no drop-path)
            self.florence.vision_tower.eval()
            self.florence.multi_modal_projector.eval()
        return self

    def pixel_values(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [B, H, W, 3] → normalised float [B, 3, S, S] at Florence's input size."""
        if self.tower_input == "compute":
            return self._pixel_values_compute(images)
        dtype = self.queries.dtype
        x = images.permute(0, 3, 1, 2).to(dtype) / 255.0
        if x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            x = F.interpolate(x.float(), size=(self.image_size, self.image_size), mode="bicubic",
                              antialias=True, align_corners=False).clamp_(0, 1).to(dtype)
        return (x - self.mean.to(dtype)) / self.std.to(dtype)

    def _pixel_values_compute(self, images: torch.Tensor) -> torch.Tensor:
        """`pixel_values` in the compute dtype throughout (model.tower_input=compute).

        The antialiased bicubic resize is linear and separable, so it is two matrix products,
        Mh @ x @ Mwᵀ, with Mh and Mw taken from F.interpolate itself (fp32, once per input
        size): the same weights as the fp32 path, run in bf16 on tensor cores. (torch's
        antialiased bicubic has no bf16 CPU kernel, and on a GPU it is a gather, not a GEMM.)
        The clamp and normalisation are then one multiply-add.
        """
        dtype = self.queries.dtype
        x = images.permute(0, 3, 1, 2).to(dtype)  # 0..255: exact in bf16
        h, w = x.shape[-2:]
        if (h, w) != (self.image_size, self.image_size):
            mh = self._resize_matrix(h, x.device, dtype)
            mw = mh if w == h else self._resize_matrix(w, x.device, dtype)
            x = torch.matmul(torch.matmul(mh, x), mw.t()).clamp_(0, 255)
        scale = (1.0 / (255.0 * self.std)).to(dtype)
        return torch.addcmul((-self.mean / self.std).to(dtype), x, scale)

    def _resize_matrix(self, n: int, device, dtype) -> torch.Tensor:
        """[image_size, n]: the antialiased bicubic resize of one axis from n to image_size."""
        cache = self.__dict__.setdefault("_resize_cache", {})  # not a buffer: never saved
        key = (n, str(device), dtype)
        if key not in cache:
            eye = torch.eye(n, device=device, dtype=torch.float32)[None, None]
            m = F.interpolate(eye, size=(self.image_size, n), mode="bicubic", antialias=True, align_corners=False)
            cache[key] = m[0, 0].to(dtype)
        return cache[key]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [B, H, W, 3] → caption embeddings [B, num_queries, out_dim]."""
        b = images.shape[0]
        lm = self.florence.language_model
        self._match_projector_buffer()
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.train_vision_tower):
            feats = self.florence.get_image_features(self.pixel_values(images)).pooler_output
        ids = self.prompt_ids.expand(b, -1)
        embeds = self.florence.get_input_embeddings()(ids)
        slots = (ids == self.image_token_id).unsqueeze(-1)
        embeds = embeds.masked_scatter(slots, feats.to(embeds.dtype))
        enc = lm.encoder(inputs_embeds=embeds).last_hidden_state
        queries = self.queries.expand(b, -1, -1).to(enc.dtype)
        dec = lm.decoder(inputs_embeds=queries, encoder_hidden_states=enc).last_hidden_state
        return self.proj(dec)

    def _match_projector_buffer(self) -> None:
        """DeepSpeed's bf16/fp16 engine casts parameters, not buffers: Florence's projector
        adds a fixed sinusoidal buffer, and an fp32 one promotes its features to fp32 in
        front of its bf16 Linear (a dtype error). Keep the buffer in the projector's dtype."""
        proj = self.florence.multi_modal_projector
        emb, dtype = proj.visual_temporal_embed, proj.image_projection.weight.dtype
        if emb.pos_idx_to_embed.dtype != dtype:
            emb.pos_idx_to_embed = emb.pos_idx_to_embed.to(dtype)

    def param_counts(self) -> dict[str, dict[str, int]]:
        parts = {"vision_tower": self.florence.vision_tower,
                 "projector": self.florence.multi_modal_projector,
                 "language_model": self.florence.language_model, "phi": self.proj}
        out = {k: {"total": sum(p.numel() for p in m.parameters()),
                   "trainable": sum(p.numel() for p in m.parameters() if p.requires_grad)}
               for k, m in parts.items()}
        out["queries"] = {"total": self.queries.numel(), "trainable": self.queries.numel()}
        return out
