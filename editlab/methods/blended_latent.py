"""Blended Latent Diffusion (Avrahami et al., ACM TOG / SIGGRAPH 2023).

Local text-driven editing with any text-to-image latent diffusion model: start from the source latents noised
to an intermediate level, and after every denoising step under the target prompt, replace the latents outside
the (latent-resolution) mask by the source latents noised to the new level (the paper's Algorithm 1). Outside
the mask the final latents are the source latents, so only the VAE round trip changes those pixels. The
paper's optional background reconstruction (per-image decoder fine-tuning) is not included.

Defaults: DDIM, ``strength=0.75`` (the reference code skips the first 25% of the steps,
``blending_start_percentage=0.25``), guidance and step count from the backbone (SD: 7.5 and 50). The mask is
downsampled so that a latent cell is edited when any of its pixels is: the paper dilates thin masks, which a
plain nearest-neighbour downsampling would lose at low latent resolution.
"""

from __future__ import annotations

import torch
from PIL import Image

from editlab.methods.base import EditMethod
from editlab.methods.common import ddim_scheduler, decode_latents, encode_image, encode_prompt
from editlab.methods.diffedit import mask_to_latent
from editlab.methods.inpaint import LOCAL_TASKS
from editlab.types import Condition, EditOutput, LearningStrategy, Sample, Taxonomy


def latent_mask(mask: Image.Image, size: tuple[int, int], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(1, 1, h, w) float mask at latent resolution: a cell is 1 if any of its pixels is masked."""
    return torch.from_numpy(mask_to_latent(mask, size)).to(device, dtype)[None, None]


@torch.no_grad()
def guided_eps(unet, latents: torch.Tensor, t: torch.Tensor, cond: torch.Tensor, uncond: torch.Tensor,
               guidance: float) -> torch.Tensor:
    """Classifier-free guided noise prediction (one UNet call on a doubled batch when guidance != 1)."""
    if guidance == 1.0:
        return unet(latents, t, encoder_hidden_states=cond).sample
    n = latents.shape[0]
    eps = unet(torch.cat([latents] * 2), t, encoder_hidden_states=torch.cat([uncond.expand(n, -1, -1),
                                                                             cond.expand(n, -1, -1)])).sample
    eps_u, eps_c = eps.chunk(2)
    return eps_u + guidance * (eps_c - eps_u)


class BlendedLatentDiffusion(EditMethod):
    name = "blended_latent"
    taxonomy = Taxonomy(
        learning_strategy=LearningStrategy.TRAINING_FREE,
        conditions=(Condition.MASK, Condition.PROMPT_PAIR),
        tasks=LOCAL_TASKS,
        paper="Avrahami et al., Blended Latent Diffusion, ACM TOG 2023",
    )

    def __init__(self, strength: float = 0.75, guidance_scale: float | None = None,
                 num_inference_steps: int | None = None) -> None:
        super().__init__(strength=strength, guidance_scale=guidance_scale, num_inference_steps=num_inference_steps)
        if not 0.0 < strength <= 1.0:
            raise ValueError(f"strength must be in (0, 1], got {strength}")
        self.strength = strength
        self.guidance_scale = guidance_scale
        self.num_inference_steps = num_inference_steps

    def setup(self, backbone, cache_dir=None) -> None:
        super().setup(backbone, cache_dir)
        self.scheduler = ddim_scheduler(backbone)

    @torch.no_grad()
    def edit(self, sample: Sample, generator: torch.Generator) -> EditOutput:
        bb = self.backbone
        steps = self.num_inference_steps or bb.num_inference_steps
        guidance = self.guidance_scale if self.guidance_scale is not None else bb.guidance_scale

        def noise_like(x: torch.Tensor) -> torch.Tensor:
            return torch.randn(x.shape, generator=generator, dtype=torch.float32).to(x.device, x.dtype)

        # 1. Encode the source image, the target prompt and the empty prompt (for classifier-free guidance)
        source = encode_image(bb, sample.source_image)
        cond = encode_prompt(bb, [sample.target_prompt])
        uncond = encode_prompt(bb, [""])
        # 2. The mask at latent resolution
        mask = latent_mask(sample.mask, tuple(source.shape[-2:]), source.device, source.dtype)
        # 3. Timesteps: skip the first (1 - strength) of the schedule
        self.scheduler.set_timesteps(steps, device=bb.device)
        timesteps = self.scheduler.timesteps[steps - max(1, round(steps * self.strength)):]
        # 4. Start from the source noised to the first kept timestep
        latents = self.scheduler.add_noise(source, noise_like(source), timesteps[:1])
        for i, t in enumerate(timesteps):
            # 5. Denoise one step under the target prompt
            eps = guided_eps(bb.unet, latents, t, cond, uncond, guidance)
            latents = self.scheduler.step(eps, t, latents).prev_sample
            # 6. Blend: outside the mask, the source noised to the level just reached (clean after the last step)
            if i + 1 < len(timesteps):
                background = self.scheduler.add_noise(source, noise_like(source), timesteps[i + 1 : i + 2])
            else:
                background = source
            latents = latents * mask + background * (1 - mask)
        # 7. Decode
        return EditOutput(image=decode_latents(bb, latents), info={"steps_run": len(timesteps),
                                                                   "latent_mask_area": float(mask.mean())})
