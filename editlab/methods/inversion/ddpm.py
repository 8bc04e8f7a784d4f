"""Edit-friendly DDPM inversion (Huberman-Spiegelglas, Kulikov and Michaeli, "An Edit Friendly DDPM Noise
Space: Inversion and Manipulations", CVPR 2024).

Noise the source image independently to every level, x_t = sqrt(a_t) x_0 + sqrt(1 - a_t) n_t, then solve
each DDPM step (DDIM with eta = 1) for the noise map z_t that takes x_t exactly to x_{t-1} under the source
prompt. Denoising with the same maps and the source prompt reproduces the source; with the target prompt it
edits it, the maps carrying the structure. The first ``skip`` fraction of steps is not run (editing starts
from x at step ``skip * N``).

Follows the official code (``inbarhub/DDPM_inversion``, ``ddm_inversion/inversion_utils.py``
``inversion_forward_process`` and ``main_run.py``): eta = 1, T_skip = 36 of T = 100 steps (``skip=0.36``), and
the noise map of the last denoising step is zeroed after the inversion (``zs[0] = 0``: the final step is
deterministic; ``zero_last_noise=False`` keeps it, and the reconstruction is then exact). On Stable Diffusion
backbones the preset gives the paper's 100 steps, source guidance 3.5 and target guidance 15 (the run's editing
scale); elsewhere ``source_guidance`` left ``None`` is the run's editing scale. For eta other than 1 the step
follows diffusers' DDIM (sigma = eta * sqrt(variance), direction sqrt(1 - a_prev - sigma**2)); the official
``reverse_step`` uses sqrt(1 - a_prev - eta * variance) there (the two agree at the paper's eta = 1).
"""

from __future__ import annotations

import torch

from editlab.methods.common import ddim_scheduler
from editlab.methods.inversion.base import Inversion, InversionResult, ddim_alphas
from editlab.methods.presets import Preset


class DDPMInversion(Inversion):
    name = "ddpm"
    paper = "Huberman-Spiegelglas et al., Edit-friendly DDPM inversion, CVPR 2024"
    stochastic = True
    presets = {"sd": Preset(
        source="inbarhub/DDPM_inversion main_run.py (--num_diffusion_steps 100, --cfg_src 3.5, --cfg_tar 15, "
               "--skip 36, --eta 1)",
        settings={"num_inference_steps": 100, "target_guidance": 15.0, "source_guidance": 3.5})}

    def __init__(self, source_guidance: float | None = None, skip: float = 0.36, eta: float = 1.0,
                 zero_last_noise: bool = True) -> None:
        if not 0.0 <= skip < 1.0:
            raise ValueError(f"skip must be in [0, 1), got {skip}")
        if eta <= 0:
            raise ValueError(f"eta must be > 0 (eta = 0 is DDIM inversion), got {eta}")
        self.source_guidance = source_guidance
        self.skip = skip
        self.eta = eta
        self.zero_last_noise = zero_last_noise

    def inversion_guidance(self, guidance_scale: float) -> float:
        return float(self.source_guidance if self.source_guidance is not None else guidance_scale)

    @torch.no_grad()
    def invert(self, backbone, latents, source_embeds, null_embeds, num_inference_steps, guidance_scale,
               generator=None, ddim=None) -> InversionResult:
        bb = backbone
        n = num_inference_steps
        source_guidance = self.inversion_guidance(guidance_scale)
        scheduler = ddim_scheduler(bb)
        scheduler.set_timesteps(n, device=bb.device)
        start = int(round(self.skip * n))
        # 1. Noise x_0 independently to the level of every denoising step
        xs = torch.zeros(n + 1, *latents.shape[1:], device=latents.device, dtype=latents.dtype)
        xs[0] = latents[0]
        for i in range(n):
            a_t, _ = ddim_alphas(scheduler, i)
            noise = torch.randn(latents.shape, generator=generator, dtype=torch.float32).to(latents)
            xs[n - i] = (a_t**0.5 * latents + (1 - a_t) ** 0.5 * noise)[0]
        # 2. Solve each step for the noise map that lands exactly on the next level
        maps = torch.zeros(n, *latents.shape[1:], device=latents.device, dtype=latents.dtype)
        embeds = torch.cat([null_embeds, source_embeds])
        for i in range(start, n):
            t = scheduler.timesteps[i]
            x = xs[n - i : n - i + 1]
            eps_u, eps_c = bb.unet(torch.cat([x, x]), t, encoder_hidden_states=embeds).sample.chunk(2)
            eps = eps_u + source_guidance * (eps_c - eps_u)
            mean = scheduler.step(eps, t, x, eta=self.eta, variance_noise=torch.zeros_like(x)).prev_sample
            a_t, a_prev = ddim_alphas(scheduler, i)
            sigma = self.eta * ((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)) ** 0.5
            z = (xs[n - i - 1 : n - i] - mean) / sigma if sigma > 0 else torch.zeros_like(mean)
            maps[i] = z[0]
            xs[n - i - 1] = (mean + sigma * z)[0]  # as the official code: the level the sampler will reach
        # 3. As the official code, the last step's noise map is zeroed (its final step is deterministic)
        if self.zero_last_noise:
            maps[n - 1] = 0.0
        # 4. The maps are tied to the source guidance they were solved with
        return InversionResult(latents=xs, num_inference_steps=n, start_step=start, noise_maps=maps,
                               source_guidance=source_guidance, guidance_locked=True)

    def denoise_step(self, scheduler, result, step, state, predict, source):
        """DDPM step (eta > 0) with the stored noise map of this step for every branch."""
        (x,) = state
        t = scheduler.timesteps[step]
        z = result.noise_maps[step : step + 1].to(x.dtype).expand_as(x)
        return (scheduler.step(predict(x), t, x, eta=self.eta, variance_noise=z).prev_sample,)
