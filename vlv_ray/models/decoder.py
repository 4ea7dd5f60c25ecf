"""The frozen diffusion decoder: SD's VAE, CLIP text encoder, UNet and noise scheduler.

Caption embeddings enter the CLIP text encoder as `inputs_embeds` (transformers 5 has no
such argument on `CLIPTextModel.forward`, so `clip_text_from_embeds` runs the same steps
by hand: position embeddings → causal mask → encoder → final layer norm). Everything here
is frozen and stays in eval mode; gradients still flow *through* it to the embeddings.
"""
from __future__ import annotations

import inspect
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn


def clip_text_from_embeds(text_model, inputs_embeds: torch.Tensor) -> torch.Tensor:
    """CLIPTextModel's last hidden state for token embeddings instead of token ids.

    Mirrors the `input_ids` path step for step (the test checks they are equal), so the
    position embeddings and the causal mask still apply, as they do in the paper.
    """
    from transformers.masking_utils import create_causal_mask

    hidden = text_model.embeddings(inputs_embeds=inputs_embeds)
    mask = create_causal_mask(config=text_model.config, inputs_embeds=hidden, attention_mask=None,
                              past_key_values=None)
    out = text_model.encoder(inputs_embeds=hidden, attention_mask=mask, is_causal=True)
    return text_model.final_layer_norm(out.last_hidden_state)


@torch.no_grad()
def diffusion_target(scheduler, latents: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """What the UNet learns to predict under the scheduler's objective: the noise (ε), or
    SD 2.1-768's velocity (v)."""
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "v_prediction":
        return scheduler.get_velocity(latents, noise, t)
    raise ValueError(f"scheduler prediction_type {kind!r}: expected epsilon or v_prediction")


def posterior(vae, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 [B, H, W, 3] → the VAE posterior's (mean, std), each [B, C, H/8, W/8]."""
    dtype = next(vae.parameters()).dtype
    x = images.permute(0, 3, 1, 2).to(dtype) / 127.5 - 1.0
    dist = vae.encode(x).latent_dist
    return dist.mean, dist.std


class FrozenDiffusion(nn.Module):
    """VAE + CLIP text encoder + UNet + scheduler of a Stable Diffusion checkpoint, frozen."""

    def __init__(self, vae, text_encoder, unet, noise_scheduler):
        super().__init__()
        self.vae, self.text_encoder, self.unet = vae, text_encoder, unet
        self.noise_scheduler = noise_scheduler  # not a module: no parameters, no state dict
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "FrozenDiffusion":
        return super().train(False)  # frozen means eval mode too: no dropout, ever

    @property
    def hidden_size(self) -> int:
        return self.text_encoder.config.hidden_size

    @property
    def prediction_type(self) -> str:
        return self.noise_scheduler.config.prediction_type

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """uint8 [B, H, W, 3] → scaled VAE latents [B, 4, H/8, W/8] (a sample of the posterior)."""
        return self.sample_latents(*posterior(self.vae, images), generator=generator)

    @torch.no_grad()
    def sample_latents(self, mean: torch.Tensor, std: torch.Tensor,
                       generator: torch.Generator | None = None) -> torch.Tensor:
        """A scaled latent drawn from a posterior (computed now, or read from the latent cache)."""
        dtype = next(self.vae.parameters()).dtype
        mean, std = mean.to(dtype), std.to(dtype)
        noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=dtype)
        return (mean + std * noise) * self.vae.config.scaling_factor

    def condition(self, caption_embeds: torch.Tensor) -> torch.Tensor:
        """Caption embeddings [B, 77, D] → the UNet's encoder_hidden_states (with gradients)."""
        dtype = next(self.text_encoder.parameters()).dtype
        return clip_text_from_embeds(self.text_encoder, caption_embeds.to(dtype))

    def noise_loss(self, latents: torch.Tensor, cond: torch.Tensor,
                   generator: torch.Generator | None = None) -> torch.Tensor:
        """The ordinary diffusion loss at one uniformly random timestep per sample."""
        sched = self.noise_scheduler
        b = latents.shape[0]
        t = torch.randint(0, sched.config.num_train_timesteps, (b,), generator=generator,
                          device=latents.device)
        noise = torch.randn(latents.shape, generator=generator, device=latents.device, dtype=latents.dtype)
        noisy = sched.add_noise(latents, noise, t)
        pred = self.unet(noisy, t, encoder_hidden_states=cond.to(latents.dtype)).sample
        return F.mse_loss(pred.float(), diffusion_target(sched, latents, noise, t).float())

    # ------------------------------------------------------------------ reconstruction

    @torch.no_grad()
    def empty_prompt(self, batch: int, tokenizer=None, positions: int | None = None) -> torch.Tensor:
        """The unconditional branch of classifier-free guidance: CLIP's encoding of "".

        With SD's tokenizer when given; otherwise the same ids from the text config
        (start, end, then padding to 77), which is what the tokenizer produces for "".
        `positions`: the first n positions only, for an encoder with n < 77 queries; CLIP's
        causal mask makes them exactly the encoding of the first n tokens.
        """
        cfg = self.text_encoder.config
        n = cfg.max_position_embeddings
        if tokenizer is not None:
            ids = tokenizer([""], padding="max_length", max_length=n, truncation=True, return_tensors="pt").input_ids
        else:
            pad = cfg.pad_token_id if cfg.pad_token_id is not None else cfg.eos_token_id
            ids = torch.tensor([[cfg.bos_token_id, cfg.eos_token_id] + [pad] * (n - 2)])
        device = next(self.text_encoder.parameters()).device
        hidden = self.text_encoder(input_ids=ids.to(device)).last_hidden_state[:, :positions]
        return hidden.expand(batch, -1, -1)

    @torch.no_grad()
    def sample(self, cond: torch.Tensor, uncond: torch.Tensor, *, steps: int = 50, guidance: float = 7.5,
               scheduler: str | None = None, generator: torch.Generator | None = None,
               resolution: int | None = None) -> torch.Tensor:
        """Images (uint8 [B, H, W, 3]) from UNet conditions, with classifier-free guidance.

        `scheduler`: any diffusers scheduler class name (e.g. DDIMScheduler,
        DPMSolverMultistepScheduler, EulerDiscreteScheduler) built from the training
        scheduler's config; default DDIM.
        """
        import diffusers

        name = scheduler or "DDIMScheduler"
        cls = getattr(diffusers, name, None)
        if cls is None or not hasattr(cls, "from_config") or not name.endswith("Scheduler"):
            raise ValueError(f"scheduler: {name!r} is not a diffusers scheduler class (e.g. DDIMScheduler)")
        sched = cls.from_config(self.noise_scheduler.config)
        sched.set_timesteps(steps)
        dtype = next(self.unet.parameters()).dtype
        device = next(self.unet.parameters()).device
        b = cond.shape[0]
        scale = 2 ** (len(self.vae.config.block_out_channels) - 1)
        size = resolution // scale if resolution else self.unet.config.sample_size
        latents = torch.randn((b, self.unet.config.in_channels, size, size), generator=generator,
                              dtype=torch.float32).to(device, dtype) * sched.init_noise_sigma
        both = torch.cat([uncond.to(dtype), cond.to(dtype)])
        for t in sched.timesteps:
            x = sched.scale_model_input(torch.cat([latents, latents]), t)
            eps_u, eps_c = self.unet(x, t, encoder_hidden_states=both).sample.chunk(2)
            extra = {"generator": generator} if "generator" in inspect.signature(sched.step).parameters else {}
            latents = sched.step(eps_u + guidance * (eps_c - eps_u), t, latents, **extra).prev_sample
        images = self.vae.decode(latents / self.vae.config.scaling_factor).sample
        return ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu()

    # ------------------------------------------------------------------ SD directory format

    @classmethod
    def from_pretrained(cls, path: str, dtype: torch.dtype = torch.float32) -> "FrozenDiffusion":
        """Load from a Stable Diffusion directory or hub id (vae/, text_encoder/, unet/, scheduler/)."""
        from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
        from transformers import CLIPTextModel

        return cls(
            AutoencoderKL.from_pretrained(path, subfolder="vae", torch_dtype=dtype),
            CLIPTextModel.from_pretrained(path, subfolder="text_encoder", torch_dtype=dtype),
            UNet2DConditionModel.from_pretrained(path, subfolder="unet", torch_dtype=dtype),
            DDPMScheduler.from_pretrained(path, subfolder="scheduler"),
        )

    def save_pretrained(self, path: str | Path) -> None:
        path = Path(path)
        self.vae.save_pretrained(path / "vae")
        self.text_encoder.save_pretrained(path / "text_encoder")
        self.unet.save_pretrained(path / "unet")
        self.noise_scheduler.save_pretrained(path / "scheduler")
