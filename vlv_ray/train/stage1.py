"""Stage 1: images → VLV encoder → caption embeddings → frozen SD → noise-prediction loss.

Only the encoder (its trainable parts) goes into the DeepSpeed engine; the frozen
diffusion decoder sits beside it in eval mode, in the compute dtype, never seen by the
optimizer.
"""
from __future__ import annotations

from typing import Any

import torch

from vlv_ray.config import JobConfig
from vlv_ray.data.latents import vae_digest
from vlv_ray.grid import side_by_side
from vlv_ray.models import speed
from vlv_ray.models.modes import eval_mode
from vlv_ray.models.presets import build_stage1
from vlv_ray.train.stage import Stage


class Stage1(Stage):
    def __init__(self, cfg: JobConfig, device: torch.device):
        super().__init__(cfg, device)
        m = cfg.model
        encoder, decoder = build_stage1(
            m.preset, num_queries=m.num_queries, resolution=cfg.data.resolution,
            florence_path=m.florence, sd_path=m.stable_diffusion,
            train_vision_tower=m.train_vision_tower, seed=cfg.seed,
        )
        self.tokenizer = None  # the empty prompt's ids: SD's tokenizer when there is one
        if m.stable_diffusion:
            from transformers import CLIPTokenizer

            self.tokenizer = CLIPTokenizer.from_pretrained(m.stable_diffusion, subfolder="tokenizer")
        self.trainable = encoder
        self.vae_digest = vae_digest(decoder.vae)  # which latent cache, if any, matches this VAE
        self.decoder = decoder.to(device=device, dtype=speed.frozen_dtype(m, cfg.deepspeed.precision))
        speed.apply(m, speed.stage1_modules(encoder, self.decoder))

    def evaluate(self, engine, batch: dict[str, Any]) -> dict[str, Any]:
        """Reconstructions of the batch's first images (CFG sampling)."""
        log = self.cfg.logging
        images = batch["image"][:log.eval_images].to(self.device)
        with eval_mode(engine.module) as module:
            recon = self.reconstruct(module, images, torch.Generator().manual_seed(self.cfg.seed))
        return {"reconstructions": side_by_side(images.cpu().numpy(), recon.numpy())}

    def reconstruct(self, encoder, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """uint8 images on this device → reconstructions (CPU) with the job's eval sampling settings."""
        from vlv_ray.infer.reconstruct import reconstruct_batch

        log = self.cfg.logging
        return reconstruct_batch(encoder, self.decoder, images, tokenizer=self.tokenizer, steps=log.eval_sample_steps,
                                 guidance=log.eval_guidance, generator=generator, resolution=self.cfg.data.resolution)

    def loss(self, engine, batch: dict[str, Any], generator: torch.Generator) -> torch.Tensor:
        images = batch["image"].to(self.device, non_blocking=True)
        if "latent" in batch:  # the cached posterior: the VAE encode is skipped
            moments = batch["latent"].to(self.device, non_blocking=True)
            latents = self.decoder.sample_latents(moments[:, 0], moments[:, 1], generator=generator)
        else:
            latents = self.decoder.encode_images(images, generator=generator)
        caption_embeds = engine(images)
        cond = self.decoder.condition(caption_embeds)
        return self.decoder.noise_loss(latents, cond, generator=generator)
