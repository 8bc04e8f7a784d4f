"""Building blocks shared by methods: prompt encoding, VAE round trips and DDIM inversion.

These are the pieces every inversion-based editor needs; each is a few lines on top of diffusers
components so that the method files stay flat and readable.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from diffusers import DDIMInverseScheduler, DDIMScheduler
from PIL import Image

from editlab.models.backbone import Backbone


@torch.no_grad()
def encode_prompt(backbone: Backbone, prompts: list[str]) -> torch.Tensor:
    """Text embeddings (last hidden state), as Stable Diffusion conditions its UNet."""
    tok = backbone.tokenizer(
        prompts, padding="max_length", max_length=backbone.tokenizer.model_max_length, truncation=True,
        return_tensors="pt",
    )
    return backbone.text_encoder(tok.input_ids.to(backbone.device))[0].to(backbone.dtype)


def image_to_tensor(image: Image.Image, size: int | None = None) -> torch.Tensor:
    """PIL RGB -> (1, 3, H, W) float tensor in [-1, 1]."""
    if size is not None and image.size != (size, size):
        image = image.resize((size, size), Image.BICUBIC)
    arr = np.asarray(image.convert("RGB"), dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(arr).permute(2, 0, 1).unsqueeze(0)


def tensor_to_image(x: torch.Tensor) -> Image.Image:
    """(1, 3, H, W) tensor in [-1, 1] -> PIL RGB (rounded, clipped)."""
    arr = ((x[0].float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(arr)


@torch.no_grad()
def encode_image(backbone: Backbone, image: Image.Image) -> torch.Tensor:
    """Scaled VAE latents of an image (posterior mode, deterministic)."""
    x = image_to_tensor(image, backbone.resolution).to(backbone.device, backbone.dtype)
    return backbone.vae.encode(x).latent_dist.mode() * backbone.vae.config.scaling_factor


@torch.no_grad()
def decode_latents(backbone: Backbone, latents: torch.Tensor) -> Image.Image:
    return tensor_to_image(backbone.vae.decode(latents / backbone.vae.config.scaling_factor).sample)


@torch.no_grad()
def ddim_invert(
    backbone: Backbone,
    latents: torch.Tensor,
    prompt_embeds: torch.Tensor,
    num_inference_steps: int,
    guidance_scale: float = 1.0,
    uncond_embeds: torch.Tensor | None = None,
    noise_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> list[torch.Tensor]:
    """DDIM inversion x_0 -> x_T; returns the trajectory ``[x_0, x_t1, ..., x_T]``.

    With ``guidance_scale=1`` (the default, as Null-text inversion uses) only the conditional branch runs.
    ``noise_fn`` may adjust each step's noise prediction before the step (Pix2Pix-Zero's regularisation).
    """
    inverse = DDIMInverseScheduler.from_config(backbone.scheduler.config)
    inverse.set_timesteps(num_inference_steps, device=backbone.device)
    trajectory = [latents]
    for t in inverse.timesteps:
        if guidance_scale != 1.0 and uncond_embeds is not None:
            eps_u, eps_c = backbone.unet(
                torch.cat([latents] * 2), t, encoder_hidden_states=torch.cat([uncond_embeds, prompt_embeds])
            ).sample.chunk(2)
            eps = eps_u + guidance_scale * (eps_c - eps_u)
        else:
            eps = backbone.unet(latents, t, encoder_hidden_states=prompt_embeds).sample
        if noise_fn is not None:
            eps = noise_fn(eps)
        latents = inverse.step(eps, t, latents).prev_sample
        trajectory.append(latents)
    return trajectory


def ddim_scheduler(backbone: Backbone) -> DDIMScheduler:
    """A DDIM scheduler with the backbone's noise schedule (SD-1.5 ships PNDM by default)."""
    return DDIMScheduler.from_config(backbone.scheduler.config)
