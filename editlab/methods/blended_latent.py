"""Blended Latent Diffusion (Avrahami et al., ACM TOG / SIGGRAPH 2023).

Local text-driven editing with a latent text-to-image model: denoise under the target prompt and, after every
step, replace the latents outside the (latent-resolution) mask by the source latents noised to that step's
level; only the VAE round trip (and the last step's small noise) changes the pixels outside the mask. The
paper's optional background reconstruction (per-image decoder fine-tuning) is not included.

As the official Stable Diffusion script (omriav/blended-latent-diffusion ``scripts/text_editing_SD2.py``; the
same code in cure-lab/PnPInversion ``run_editing_blended_latent_diffusion.py``), by default:

* ``init="noise"``: the latents start as pure Gaussian noise from the sample's generator (inside the mask the
  edit grows from noise; outside, the first blend puts the noised source back), and the first
  ``1 - strength`` of the DDIM schedule is skipped (``blending_start_percentage=0.25``);
* ``blend="current"``: after the step at timestep ``t`` the background is the source noised to ``t`` (the
  level the step started from), down to the last step's ``t``;
* ``mask="nearest"`` (preset ``sd``): the mask is resized to the latent size with nearest-neighbour sampling and
  thresholded at 0.5.

Named options: ``init="source"`` starts from the source noised to the first kept timestep (the paper's
Algorithm 1), ``blend="next"`` noises the background to the level the step reached (clean after the last
step), ``mask="any"`` marks a latent cell when any of its pixels is masked: what backbones without a preset
use, since at low latent resolution (ShapesWorld: 8x8) nearest sampling loses small objects.
Preset ``sd``: 50 DDIM steps, guidance 7.5, strength 0.75, as the official script.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
from PIL import Image

from editlab.methods.base import EditMethod
from editlab.methods.common import ddim_scheduler, decode_latents, encode_image, encode_prompt
from editlab.methods.defaults import fill_unset
from editlab.methods.diffedit import mask_to_latent
from editlab.methods.inpaint import LOCAL_TASKS
from editlab.methods.presets import Preset
from editlab.types import Condition, EditOutput, LearningStrategy, Sample, Taxonomy

INITS = ("noise", "source")
BLENDS = ("current", "next")
MASKS = ("nearest", "any")


def latent_mask(mask: Image.Image, size: tuple[int, int], device: torch.device, dtype: torch.dtype,
                mode: str = "any") -> torch.Tensor:
    """(1, 1, h, w) float mask at latent resolution: ``any``: a cell is 1 if any of its pixels is masked;
    ``nearest``: nearest-neighbour resize thresholded at 0.5 (the official BLD script's ``_read_mask``)."""
    if mode == "nearest":
        small = np.asarray(mask.convert("L").resize((size[1], size[0]), Image.NEAREST), dtype=np.float32) / 255.0
        cells = small >= 0.5
    elif mode == "any":
        cells = mask_to_latent(mask, size)
    else:
        raise ValueError(f"unknown mask mode {mode!r}; valid: {', '.join(MASKS)}")
    return torch.from_numpy(np.asarray(cells, dtype=np.float32)).to(device, dtype)[None, None]


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
    presets: ClassVar[dict[str, Preset]] = {
        "sd": Preset(
            source="omriav/blended-latent-diffusion scripts/text_editing_SD2.py (blending_start_percentage 0.25, "
                   "50 DDIM steps, guidance 7.5, pure-noise start, background at the step's t, nearest mask); "
                   "cure-lab/PnPInversion run_editing_blended_latent_diffusion.py",
            settings={"strength": 0.75, "guidance_scale": 7.5, "num_inference_steps": 50, "init": "noise",
                      "blend": "current", "mask": "nearest"},
        ),
    }

    def __init__(self, strength: float | None = None, guidance_scale: float | None = None,
                 num_inference_steps: int | None = None, init: str | None = None, blend: str | None = None,
                 mask: str | None = None) -> None:
        super().__init__(strength=strength, guidance_scale=guidance_scale, num_inference_steps=num_inference_steps,
                         init=init, blend=blend, mask=mask)
        if strength is not None and not 0.0 < strength <= 1.0:
            raise ValueError(f"strength must be in (0, 1], got {strength}")
        for key, value, valid in (("init", init, INITS), ("blend", blend, BLENDS), ("mask", mask, MASKS)):
            if value is not None and value not in valid:
                raise ValueError(f"unknown {key} {value!r}; valid: {', '.join(valid)}")
        self.strength = strength
        self.guidance_scale = guidance_scale
        self.num_inference_steps = num_inference_steps
        self.init = init
        self.blend = blend
        self.mask = mask

    def setup(self, backbone, cache_dir=None) -> None:
        super().setup(backbone, cache_dir)
        # the official SD behaviour (pure-noise start, background at the step's t) on every SD-family backbone;
        # the "any pixel" mask where no preset says otherwise (small latents)
        self.preset_record["defaults"] = fill_unset(self, {
            "strength": 0.75, "guidance_scale": backbone.guidance_scale,
            "num_inference_steps": backbone.num_inference_steps, "init": "noise", "blend": "current",
            "mask": "any"})
        self.scheduler = ddim_scheduler(backbone)

    def timesteps(self) -> torch.Tensor:
        """The kept DDIM timesteps: the schedule without its first ``int(steps * (1 - strength))``."""
        self.scheduler.set_timesteps(self.num_inference_steps, device=self.backbone.device)
        skip = int(round(self.num_inference_steps * (1 - self.strength), 9))
        return self.scheduler.timesteps[min(skip, self.num_inference_steps - 1):]

    @torch.no_grad()
    def edit(self, sample: Sample, generator: torch.Generator) -> EditOutput:
        bb = self.backbone

        def noise_like(x: torch.Tensor) -> torch.Tensor:
            return torch.randn(x.shape, generator=generator, dtype=torch.float32).to(x.device, x.dtype)

        # 1. Encode the source image, the target prompt and the empty prompt (for classifier-free guidance)
        source = encode_image(bb, sample.source_image)
        cond = encode_prompt(bb, [sample.target_prompt])
        uncond = encode_prompt(bb, [""])
        # 2. The mask at latent resolution
        mask = latent_mask(sample.mask, tuple(source.shape[-2:]), source.device, source.dtype, self.mask)
        # 3. Timesteps: skip the first (1 - strength) of the schedule
        timesteps = self.timesteps()
        # 4. Start: pure noise (official SD script) or the source noised to the first kept timestep (Algorithm 1)
        latents = noise_like(source)
        if self.init == "source":
            latents = self.scheduler.add_noise(source, latents, timesteps[:1])
        for i, t in enumerate(timesteps):
            # 5. Denoise one step under the target prompt
            eps = guided_eps(bb.unet, latents, t, cond, uncond, self.guidance_scale)
            latents = self.scheduler.step(eps, t, latents).prev_sample
            # 6. Blend: outside the mask, the source noised to this step's t (official) or to the level reached
            if self.blend == "current":
                background = self.scheduler.add_noise(source, noise_like(source), t.reshape(1))
            elif i + 1 < len(timesteps):
                background = self.scheduler.add_noise(source, noise_like(source), timesteps[i + 1 : i + 2])
            else:
                background = source
            latents = latents * mask + background * (1 - mask)
        # 7. Decode
        return EditOutput(image=decode_latents(bb, latents), info={"steps_run": len(timesteps),
                                                                   "latent_mask_area": float(mask.mean())})
