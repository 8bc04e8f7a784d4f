"""EDICT (Wallace, Gokul and Naik, "EDICT: Exact Diffusion Inversion via Coupled Transformations", CVPR 2023).

Two coupled latent sequences (x, y) start equal to the source latents. A denoising step updates each with
the noise predicted from the other, x' = a x + b eps(y), y' = a y + b eps(x'), then mixes them with weight
p (x'' = p x' + (1 - p) y', y'' = p y' + (1 - p) x''). Every operation is affine in the sequence it updates,
so the step inverts exactly in closed form: inversion followed by denoising returns the source latents up to
float rounding, at any guidance scale used for both. With ``leapfrog`` the order of the two updates
alternates between steps (counted from the first step run, as the official loop counts them).

Follows the official code (``salesforce/EDICT`` ``edict_functions.py``, ``EDICT_editing`` and
``coupled_stablediffusion``): mixing weight p = 0.93, leapfrog steps, editing from ``strength`` = 0.8 of the
schedule (``init_image_strength``), latent arithmetic in float64 (``fp64``; the UNet itself runs in the
backbone's dtype). The paper inverts and edits at one guidance scale: ``guidance_scale=None`` uses the run's
editing scale for both, and on Stable Diffusion backbones the preset makes that scale the official 3 (50 steps).
Where editlab differs: the source is encoded with the VAE posterior's mode (the official code draws a posterior
sample with seed 1), so the inversion is deterministic and cacheable.
"""

from __future__ import annotations

import torch

from editlab.methods.common import ddim_scheduler
from editlab.methods.inversion.base import Inversion, InversionResult, ddim_alphas, to_epsilon
from editlab.methods.presets import Preset


class EDICTInversion(Inversion):
    name = "edict"
    paper = "Wallace et al., EDICT, CVPR 2023"
    presets = {"sd": Preset(
        source="salesforce/EDICT edict_functions.py (EDICT_editing: steps=50, guidance_scale=3, mix_weight=0.93, "
               "init_image_strength=0.8)",
        settings={"num_inference_steps": 50, "target_guidance": 3.0})}

    def __init__(self, mix_weight: float = 0.93, guidance_scale: float | None = None, strength: float = 0.8,
                 leapfrog: bool = True, fp64: bool = True) -> None:
        if not 0.5 <= mix_weight < 1.0:
            raise ValueError(f"mix_weight must be in [0.5, 1), got {mix_weight}")
        if not 0.0 < strength <= 1.0:
            raise ValueError(f"strength must be in (0, 1], got {strength}")
        self.mix_weight = mix_weight
        self.guidance_scale = guidance_scale
        self.strength = strength
        self.leapfrog = leapfrog
        self.fp64 = fp64

    def _coefficients(self, scheduler, step: int) -> tuple[float, float]:
        """x_{t-1} = a x_t + b eps: the DDIM update written as an affine map."""
        a_t, a_prev = ddim_alphas(scheduler, step)
        return (a_prev / a_t) ** 0.5, (1 - a_prev) ** 0.5 - (a_prev * (1 - a_t) / a_t) ** 0.5

    def _order(self, step: int, start: int) -> tuple[int, int]:
        """Which sequence is updated first at denoising step ``step`` (leapfrog counts from ``start``)."""
        return (1, 0) if self.leapfrog and (step - start) % 2 else (0, 1)

    @torch.no_grad()
    def invert(self, backbone, latents, source_embeds, null_embeds, num_inference_steps, guidance_scale,
               generator=None, ddim=None) -> InversionResult:
        bb = backbone
        n = num_inference_steps
        g = self.inversion_guidance(guidance_scale)
        scheduler = ddim_scheduler(bb)
        scheduler.set_timesteps(n, device=bb.device)
        dtype = torch.float64 if self.fp64 else latents.dtype
        embeds = torch.cat([null_embeds, source_embeds])

        def eps(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            zz = z.to(bb.dtype)
            out_u, out_c = bb.unet(torch.cat([zz, zz]), t, encoder_hidden_states=embeds).sample.chunk(2)
            return to_epsilon(scheduler, out_u + g * (out_c - out_u), zz, t).to(dtype)

        # 1. Both sequences start at the source latents
        start = n - int(n * self.strength)
        pair = [latents.to(dtype), latents.to(dtype)]
        trajectory = torch.zeros(n + 1, *latents.shape[1:], device=latents.device, dtype=dtype)
        trajectory[0] = pair[0][0]
        p = self.mix_weight
        # 2. Undo denoising steps N-1, ..., start: mixing first, then the two updates in reverse order
        for i in reversed(range(start, n)):
            t = scheduler.timesteps[i]
            pair[1] = (pair[1] - (1 - p) * pair[0]) / p
            pair[0] = (pair[0] - (1 - p) * pair[1]) / p
            a, b = self._coefficients(scheduler, i)
            for k in reversed(self._order(i, start)):
                pair[k] = (pair[k] - b * eps(pair[1 - k], t)) / a
            trajectory[n - i] = pair[0][0]
        # 3. The coupled pair is only consistent with the guidance it was inverted with
        return InversionResult(latents=trajectory, num_inference_steps=n, start_step=start, coupled=pair[1],
                               source_guidance=g, guidance_locked=True)

    def initial_state(self, result, num_branches):
        x = result.level(result.num_inference_steps - result.start_step)
        y = result.coupled
        return tuple(z.expand(num_branches, *z.shape[1:]).clone() for z in (x, y))

    def denoise_step(self, scheduler, result, step, state, predict, source):
        """EDICT's coupled step for every branch: two updates, each from the other sequence, then mixing."""
        t = scheduler.timesteps[step]
        pair = list(state)
        a, b = self._coefficients(scheduler, step)
        for k in self._order(step, result.start_step):
            pair[k] = a * pair[k] + b * to_epsilon(scheduler, predict(pair[1 - k]), pair[1 - k], t)
        p = self.mix_weight
        pair[0] = p * pair[0] + (1 - p) * pair[1]
        pair[1] = p * pair[1] + (1 - p) * pair[0]
        return tuple(pair)
