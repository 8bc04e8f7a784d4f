"""Building blocks of flow-matching editors: a backbone seen as a velocity field in its latent space.

SD3-shaped (``sd3``) and FLUX-shaped (``flux``) backbones are rectified flows ``x_sigma = (1 - sigma) x_0 + sigma
noise`` whose transformer predicts the velocity ``noise - x_0``. :class:`FlowModel` hides what differs between
them so FlowEdit and RF-Inversion are written once:

* prompt encoding (the family's text-to-image pipeline's own ``encode_prompt``);
* the forward call: SD3 takes ``timestep = 1000 sigma`` and runs classifier-free guidance when the scale is above
  1 (two forwards); FLUX.1-dev packs 2x2 latent patches into tokens with position ids, takes
  ``timestep = sigma`` and feeds the scale to its guidance embedding (one forward);
* the sigma grid: the scheduler's own (SD3: a fixed time shift) or, for schedulers with dynamic shifting (FLUX),
  ``linspace(1, 1/T, T)`` shifted by ``mu`` computed from the image's token count, as ``FluxPipeline`` does;
* VAE encoding with the ``(z - shift_factor) * scaling_factor`` normalisation both families use.

Latents stay in the VAE's (B, C, h, w) layout throughout; packing is an exact reshape inside :meth:`velocity`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from editlab.models.families import build_pipeline, call_kwargs
from editlab.models.speed import cache_context, reset_cache

FLOW_FAMILIES = ("sd3", "flux")


@dataclass
class TextCondition:
    """A text condition: what the family's transformer takes besides latents and time."""

    embeds: torch.Tensor
    pooled: torch.Tensor
    negative_embeds: torch.Tensor | None = None  # SD3 classifier-free guidance
    negative_pooled: torch.Tensor | None = None
    text_ids: torch.Tensor | None = None  # FLUX position ids of the text tokens


class FlowModel:
    """Velocity field, sigma grid, prompt and image encoding of a flow-matching backbone."""

    def __init__(self, backbone: Any) -> None:
        if backbone.family not in FLOW_FAMILIES:
            raise ValueError(f"FlowModel needs a flow-matching backbone ({', '.join(FLOW_FAMILIES)}), "
                             f"got family '{backbone.family}'")
        from diffusers import FlowMatchEulerDiscreteScheduler

        self.backbone = backbone
        self.family = backbone.family
        self.pipe = build_pipeline(backbone, "text2img")
        self.transformer = backbone.transformer
        self.vae = backbone.vae
        # a private copy: set_timesteps must not disturb the pipelines other methods build from the backbone
        self.scheduler = FlowMatchEulerDiscreteScheduler.from_config(backbone.scheduler.config)
        self.device = self.pipe._execution_device
        self.dtype = backbone.dtype
        self.vae_scale = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.patch = 2 if self.family == "flux" else int(self.transformer.config.patch_size)
        self.call_kwargs = call_kwargs(backbone)

    def start(self) -> None:
        """Call at the start of an edit: caching hooks forget the previous edit."""
        reset_cache(self.transformer)

    # --- images ------------------------------------------------------------------------------------------
    def check_size(self, width: int, height: int) -> None:
        multiple = self.vae_scale * self.patch
        if width % multiple or height % multiple:
            raise ValueError(f"{self.family} backbones need image sides divisible by {multiple}, got {width}x{height}")

    @torch.no_grad()
    def encode_image(self, image: Image.Image, generator: torch.Generator | None = None,
                     sample: bool = False) -> torch.Tensor:
        """Normalised latents ``(z - shift) * scale`` of ``image`` (posterior mode, or a sample when ``sample``)."""
        x = self.pipe.image_processor.preprocess(image).to(self.device, self.vae.dtype)
        dist = self.vae.encode(x).latent_dist
        z = dist.sample(generator) if sample else dist.mode()
        return ((z - self.vae.config.shift_factor) * self.vae.config.scaling_factor).to(self.dtype)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> Image.Image:
        z = latents / self.vae.config.scaling_factor + self.vae.config.shift_factor
        image = self.vae.decode(z.to(self.vae.dtype), return_dict=False)[0]
        return self.pipe.image_processor.postprocess(image, output_type="pil")[0]

    # --- text --------------------------------------------------------------------------------------------
    @torch.no_grad()
    def encode_prompt(self, prompt: str, negative_prompt: str = "") -> TextCondition:
        """The family pipeline's ``encode_prompt`` (SD3: with the negative prompt for classifier-free guidance)."""
        extra = {k: v for k, v in self.call_kwargs.items() if k == "max_sequence_length"}
        if self.family == "sd3":
            emb, neg, pooled, neg_pooled = self.pipe.encode_prompt(
                prompt=prompt, prompt_2=None, prompt_3=None, negative_prompt=negative_prompt,
                do_classifier_free_guidance=True, device=self.device, **extra)
            return TextCondition(emb, pooled, neg, neg_pooled)
        emb, pooled, text_ids = self.pipe.encode_prompt(prompt=prompt, prompt_2=None, device=self.device, **extra)
        return TextCondition(emb, pooled, text_ids=text_ids)

    # --- time --------------------------------------------------------------------------------------------
    def timesteps(self, num_steps: int, latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(timesteps, sigmas) of a ``num_steps`` sampling run; ``sigmas`` has the terminal 0 appended."""
        from diffusers.pipelines.flux.pipeline_flux import calculate_shift, retrieve_timesteps

        sched = self.scheduler
        if sched.config.get("use_dynamic_shifting", False):
            seq_len = (latents.shape[-2] // self.patch) * (latents.shape[-1] // self.patch)
            mu = calculate_shift(seq_len, sched.config.get("base_image_seq_len", 256),
                                 sched.config.get("max_image_seq_len", 4096), sched.config.get("base_shift", 0.5),
                                 sched.config.get("max_shift", 1.15))
            sigmas = np.linspace(1.0, 1 / num_steps, num_steps)
            timesteps, _ = retrieve_timesteps(sched, num_steps, self.device, sigmas=sigmas, mu=mu)
        else:
            timesteps, _ = retrieve_timesteps(sched, num_steps, self.device)
        return timesteps, sched.sigmas.to(self.device)

    # --- the velocity field ------------------------------------------------------------------------------
    @torch.no_grad()
    def velocity(self, latents: torch.Tensor, t: torch.Tensor | float, cond: TextCondition, guidance: float,
                 context: str = "cond") -> torch.Tensor:
        """The guided velocity at ``latents`` and scheduler time ``t`` (``1000 sigma``), in the latents' layout.

        SD3: classifier-free guidance with the condition's negative embeddings when ``guidance > 1``, else the
        conditional prediction only (as ``StableDiffusion3Pipeline``). FLUX: one forward with the guidance
        embedding set to ``guidance`` (``None`` for a transformer without one). ``context`` names the branch for
        diffusers' caching hooks."""
        t = torch.as_tensor(t, device=self.device, dtype=torch.float32)
        x = latents.to(self.dtype)
        if self.family == "sd3":
            if guidance > 1:
                model_in = torch.cat([x, x])
                embeds = torch.cat([cond.negative_embeds, cond.embeds])
                pooled = torch.cat([cond.negative_pooled, cond.pooled])
            else:
                model_in, embeds, pooled = x, cond.embeds, cond.pooled
            with cache_context(self.transformer, context):
                v = self.transformer(hidden_states=model_in, timestep=t.expand(model_in.shape[0]),
                                     encoder_hidden_states=embeds, pooled_projections=pooled,
                                     return_dict=False)[0]
            if guidance > 1:
                v_uncond, v_text = v.chunk(2)
                v = v_uncond + guidance * (v_text - v_uncond)
            return v
        b, c, h, w = x.shape
        packed = self.pipe._pack_latents(x, b, c, h, w)
        img_ids = self.pipe._prepare_latent_image_ids(b, h // 2, w // 2, self.device, self.dtype)
        g = (torch.full([b], float(guidance), device=self.device, dtype=torch.float32)
             if self.transformer.config.guidance_embeds else None)
        with cache_context(self.transformer, context):
            v = self.transformer(hidden_states=packed, timestep=t.expand(b).to(self.dtype) / 1000, guidance=g,
                                 pooled_projections=cond.pooled, encoder_hidden_states=cond.embeds,
                                 txt_ids=cond.text_ids, img_ids=img_ids, return_dict=False)[0]
        return self.pipe._unpack_latents(v, h * self.vae_scale, w * self.vae_scale, self.vae_scale)


def noise_like(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Standard normal noise of ``x``'s shape drawn from ``generator`` (CPU), on ``x``'s device and dtype."""
    return torch.randn(x.shape, generator=generator, dtype=torch.float32).to(x.device, x.dtype)
