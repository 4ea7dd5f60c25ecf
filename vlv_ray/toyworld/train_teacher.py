"""Train the miniature world's text-to-image teacher, a Stable Diffusion in miniature.

    python -m vlv_ray.toyworld.train_teacher [--out DIR] [--images N] [--vae-steps N] [--unet-steps N]

The same classes as SD 2.1 with tiny configs: `AutoencoderKL` (32 px → 4 × 8 × 8 latents),
`CLIPTextModel` (16 positions, the world's words as its vocabulary), `UNet2DConditionModel`
(cross-attention at every level, down to 2 × 2: one cell a quadrant) and SD 2.1's DDPM
schedule with its v-prediction objective. Two phases, both on world images drawn with a
fixed seed: the VAE learns to reconstruct them (MSE + a very small KL), then the text
encoder and UNet learn the diffusion loss on the VAE latents of the images, conditioned on
their captions, 10% of captions dropped to "" so that classifier-free guidance works. The
result is saved in Stable Diffusion's directory layout (vae/, text_encoder/, unet/,
scheduler/, tokenizer/) and loads with `FrozenDiffusion.from_pretrained`, exactly as SD 2.1
does.

Every random draw comes from the seed; on one machine and thread count the weights are
reproducible. The committed weights were made by the defaults below with `--threads 1`.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from vlv_ray.models.decoder import FrozenDiffusion, diffusion_target
from vlv_ray.toyworld import tokens, world
from vlv_ray.toyworld.assets import TEACHER_DIR

TEACHER_SEED = 1  # the world seed of the teacher's training images (held-out evaluation uses others)
P_UNCOND = 0.1  # caption dropout: the unconditional branch of classifier-free guidance


def vae_model():
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(8, 16, 32), norm_num_groups=8, sample_size=world.SIZE, mid_block_add_attention=False)


def text_model():
    from transformers import CLIPTextConfig, CLIPTextModel

    vocab, _ = tokens.clip_vocab()
    return CLIPTextModel(CLIPTextConfig(
        vocab_size=len(vocab), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
        max_position_embeddings=tokens.MAX_TEXT_TOKENS, hidden_act="gelu", projection_dim=64,
        pad_token_id=vocab["<|endoftext|>"], bos_token_id=vocab["<|startoftext|>"],
        eos_token_id=vocab["<|endoftext|>"]))


def unet_model(cross_attention_dim: int):
    from diffusers import UNet2DConditionModel

    # Three levels, 8 → 4 → 2 latent pixels: at 2 × 2 each cell is one quadrant, which its
    # convolutions' zero padding tells apart (the UNet has no other positional signal).
    return UNet2DConditionModel(
        sample_size=world.SIZE // 4, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(32, 64, 64), down_block_types=("CrossAttnDownBlock2D",) * 3,
        up_block_types=("CrossAttnUpBlock2D",) * 3, cross_attention_dim=cross_attention_dim,
        attention_head_dim=(4, 8, 8), norm_num_groups=8, use_linear_projection=True)


def teacher_scheduler():
    """SD 2.1's DDPM schedule and objective (v-prediction, as the 768 px SD 2.1 model).

    v-prediction, not ε: at high noise ε-prediction's loss barely depends on the clean
    image, so what only the caption can tell there (where the shapes go) earned almost no
    gradient; ε-trained teachers ignored the position words entirely (a caption with the
    position changed moved their loss by < 1e-4). v's target at high noise is the clean image.
    """
    from vlv_ray.models.presets import sd_scheduler

    return sd_scheduler("v_prediction")


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """uint8 [B, H, W, 3] → float [B, 3, H, W] in [-1, 1], as SD's VAE expects."""
    return images.permute(0, 3, 1, 2).float() / 127.5 - 1.0


def _lr(step: int, steps: int, lr: float, warmup: int = 50) -> float:
    if step < warmup:
        return lr * (step + 1) / warmup
    return lr * 0.5 * (1 + np.cos(np.pi * (step - warmup) / max(1, steps - warmup)))


VAE_KL_WEIGHT = 1e-8
# The reconstruction loss is a mean over 3,072 pixel values and the KL a sum over 256 latent
# values, so SD's 1e-6 (against a summed reconstruction loss) is ≈ 3e-10 here. At 1e-5 three
# of the four latent channels collapsed to the prior: posterior std 1.6 against a signal of
# std 0.1–0.16 (scaled), training latents mostly noise, and shape lost. At 1e-8 all four carry
# the image and the posterior std is ≈ 0.01, as in SD's VAE.


def train_vae(vae, images: torch.Tensor, *, steps: int, batch: int, seed: int, lr: float = 2e-3,
              kl_weight: float = VAE_KL_WEIGHT, log=print) -> None:
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    vae.train()
    t0 = time.time()
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = _lr(step, steps, lr)
        x = to_unit(images[torch.randint(0, len(images), (batch,), generator=g)])
        dist = vae.encode(x).latent_dist
        z = dist.mean + dist.std * torch.randn(dist.mean.shape, generator=g)
        recon = vae.decode(z).sample
        loss = F.mse_loss(recon, x) + kl_weight * dist.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 100 == 0 or step == steps - 1:
            log(f"[teacher] vae step {step + 1}/{steps} loss {loss.item():.4f} ({time.time() - t0:.0f}s)")
    vae.eval()


@torch.no_grad()
def encode_all(vae, images: torch.Tensor, batch: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    means, stds = [], []
    for i in range(0, len(images), batch):
        dist = vae.encode(to_unit(images[i:i + batch])).latent_dist
        means.append(dist.mean)
        stds.append(dist.std)
    return torch.cat(means), torch.cat(stds)


def caption_ids(tokenizer, captions: list[str]) -> torch.Tensor:
    return tokenizer(captions, padding="max_length", max_length=tokens.MAX_TEXT_TOKENS, truncation=True,
                     return_tensors="pt").input_ids


def train_denoiser(text, unet, scheduler, latents: tuple[torch.Tensor, torch.Tensor], ids: torch.Tensor,
                   empty_ids: torch.Tensor, *, steps: int, batch: int, seed: int, lr: float = 1.5e-3,
                   min_snr_gamma: float = 0.0, log=print) -> list[float]:
    """Text encoder + UNet on the noise-prediction loss; returns the per-step losses.

    `min_snr_gamma` > 0 weights each sample by min(SNR, γ)/SNR, or min(SNR, γ)/(SNR + 1)
    under v-prediction (Hang et al. 2023): the low-noise steps, which only refine texture,
    count less, and the layout (where, what shape) that the caption decides is learned sooner.
    """
    snr_all = scheduler.alphas_cumprod / (1 - scheduler.alphas_cumprod)
    g = torch.Generator().manual_seed(seed)
    params = list(text.parameters()) + list(unet.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    text.train()
    unet.train()
    mean, std = latents
    losses, t0 = [], time.time()
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = _lr(step, steps, lr)
        idx = torch.randint(0, len(mean), (batch,), generator=g)
        x0 = mean[idx] + std[idx] * torch.randn(mean[idx].shape, generator=g)
        drop = torch.rand(batch, generator=g) < P_UNCOND
        cond_ids = torch.where(drop[:, None], empty_ids.expand(batch, -1), ids[idx])
        t = torch.randint(0, scheduler.config.num_train_timesteps, (batch,), generator=g)
        noise = torch.randn(x0.shape, generator=g)
        cond = text(input_ids=cond_ids).last_hidden_state
        pred = unet(scheduler.add_noise(x0, noise, t), t, encoder_hidden_states=cond).sample
        per_sample = F.mse_loss(pred, diffusion_target(scheduler, x0, noise, t), reduction="none").mean(dim=(1, 2, 3))
        if min_snr_gamma > 0:
            snr = snr_all[t]
            v = scheduler.config.prediction_type == "v_prediction"
            per_sample = per_sample * snr.clamp(max=min_snr_gamma) / (snr + 1 if v else snr)
        loss = per_sample.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        losses.append(loss.item())
        if step % 100 == 0 or step == steps - 1:
            recent = float(np.mean(losses[-100:]))
            log(f"[teacher] unet step {step + 1}/{steps} loss {recent:.4f} ({time.time() - t0:.0f}s)")
    text.eval()
    unet.eval()
    return losses


def train(out: Path, *, n_images: int, vae_steps: int, unet_steps: int, batch: int, seed: int,
          lr: float = 1.5e-3, min_snr_gamma: float = 0.0, log=print) -> dict:
    torch.manual_seed(seed)  # the initial weights
    vae, text = vae_model(), text_model()
    unet = unet_model(text.config.hidden_size)
    scheduler, tokenizer = teacher_scheduler(), tokens.clip_tokenizer()
    t0 = time.time()
    arr, attrs = world.arrays(TEACHER_SEED, n_images)
    images = torch.from_numpy(arr)
    log(f"[teacher] {n_images} world images (seed {TEACHER_SEED}) in {time.time() - t0:.1f}s")
    train_vae(vae, images, steps=vae_steps, batch=batch, seed=seed, log=log)
    mean, std = encode_all(vae, images)
    vae.register_to_config(scaling_factor=float(1.0 / mean.std()))  # unit-variance latents, as SD does
    s = vae.config.scaling_factor
    ids = caption_ids(tokenizer, [world.caption_of(a) for a in attrs])
    empty = caption_ids(tokenizer, [""])
    losses = train_denoiser(text, unet, scheduler, (mean * s, std * s), ids, empty, steps=unet_steps,
                            batch=batch, seed=seed + 1, lr=lr, min_snr_gamma=min_snr_gamma, log=log)
    teacher = FrozenDiffusion(vae, text, unet, scheduler)
    teacher.save_pretrained(out)
    tokenizer.save_pretrained(out / "tokenizer")
    record = {"seed": seed, "world_seed": TEACHER_SEED, "images": n_images, "vae_steps": vae_steps,
              "unet_steps": unet_steps, "batch": batch, "lr": lr, "min_snr_gamma": min_snr_gamma, "scaling_factor": s, "final_loss": float(np.mean(losses[-100:])),
              "seconds": round(time.time() - t0, 1), "threads": torch.get_num_threads()}
    (out / "training.json").write_text(json.dumps(record, indent=1) + "\n")
    log(f"[teacher] saved to {out} ({record['seconds']}s)")
    return record


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(TEACHER_DIR))
    p.add_argument("--images", type=int, default=10000)
    p.add_argument("--vae-steps", type=int, default=6000)
    p.add_argument("--unet-steps", type=int, default=3000)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lr", type=float, default=1.5e-3, help="text encoder + UNet peak learning rate")
    p.add_argument("--min-snr-gamma", type=float, default=0.0, help="0: the plain SD loss")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default); "
                   "the committed weights used 1, and float sums differ by thread count")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    train(Path(a.out), n_images=a.images, vae_steps=a.vae_steps, unet_steps=a.unet_steps, batch=a.batch,
          seed=a.seed, lr=a.lr, min_snr_gamma=a.min_snr_gamma, log=lambda m: print(m, flush=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
