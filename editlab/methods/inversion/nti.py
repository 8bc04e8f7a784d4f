"""Null-text inversion (Mokady et al., "NULL-text Inversion for Editing Real Images using Guided Diffusion
Models", CVPR 2023).

DDIM inversion at guidance 1 gives a trajectory x*_T ... x*_0 that classifier-free guidance at the editing
scale does not retrace. Null-text inversion optimises, step by step from x*_T, the unconditional ("null")
embedding of that step so that the guided DDIM step from the current latent lands on x*_{t-1}; the prompt
embedding and the model stay fixed. The survey files it under testing-time fine-tuning (embedding
fine-tuning).

Defaults follow the official code (google/prompt-to-prompt, ``null_text_w_ptp.ipynb``): 10 inner Adam steps
per denoising step with learning rate ``1e-2 * (1 - i / 100)`` at step ``i``, stopping early once the loss is
below ``1e-5 + 2e-5 * i``. The embedding is optimised in float32 whatever the backbone's dtype.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from editlab.methods.common import ddim_scheduler
from editlab.methods.inversion.base import InversionResult
from editlab.methods.inversion.ddim import DDIMInversion
from editlab.methods.presets import Preset
from editlab.types import LearningStrategy


class NullTextInversion(DDIMInversion):
    name = "nti"
    paper = "Mokady et al., Null-text Inversion, CVPR 2023"
    learning_strategy = LearningStrategy.TESTING_TIME_FINETUNING
    cache_result = True  # the optimised null embeddings (its pivot is the shared DDIM trajectory)
    presets = {"sd": Preset(
        source="google/prompt-to-prompt null_text_w_ptp.ipynb (NUM_DDIM_STEPS = 50, GUIDANCE_SCALE = 7.5; "
               "null_optimization: num_inner_steps=10, early_stop_epsilon=1e-5)",
        settings={"num_inference_steps": 50, "target_guidance": 7.5})}

    def __init__(self, num_inner_steps: int = 10, learning_rate: float = 1e-2, early_stop_epsilon: float = 1e-5,
                 guidance_scale: float = 1.0) -> None:
        super().__init__(guidance_scale=guidance_scale)
        if num_inner_steps < 1:
            raise ValueError(f"num_inner_steps must be >= 1, got {num_inner_steps}")
        self.num_inner_steps = num_inner_steps
        self.learning_rate = learning_rate
        self.early_stop_epsilon = early_stop_epsilon

    def inversion_guidance(self, guidance_scale: float) -> float:
        return float(guidance_scale)  # the null embeddings are optimised for the editing scale

    def invert(self, backbone, latents, source_embeds, null_embeds, num_inference_steps, guidance_scale,
               generator=None, ddim=None) -> InversionResult:
        bb = backbone
        n = num_inference_steps
        # 1. DDIM inversion at guidance 1: the pivot trajectory x*_0 ... x*_T (the shared trajectory)
        pivots = self.trajectory(bb, latents, source_embeds, null_embeds, n, ddim)
        scheduler = ddim_scheduler(bb)
        scheduler.set_timesteps(n, device=bb.device)
        null = null_embeds.detach().float().clone()
        per_step, losses, inner_used = [], [], []
        x = pivots[n : n + 1]
        for i, t in enumerate(scheduler.timesteps):
            target = pivots[n - i - 1 : n - i]
            # 2. The conditional prediction is fixed during the step's optimisation
            with torch.no_grad():
                eps_c = bb.unet(x, t, encoder_hidden_states=source_embeds).sample
            # 3. Optimise this step's null embedding so the guided step lands on the pivot
            null = null.detach().clone().requires_grad_(True)  # a fresh tensor: Adam updates it in place
            optimizer = torch.optim.Adam([null], lr=self.learning_rate * (1.0 - i / 100.0))
            loss_value, used = float("nan"), 0
            with torch.enable_grad():
                for _ in range(self.num_inner_steps):
                    eps_u = bb.unet(x, t, encoder_hidden_states=null.to(bb.dtype)).sample
                    eps = eps_u + guidance_scale * (eps_c - eps_u)
                    loss = F.mse_loss(scheduler.step(eps, t, x).prev_sample.float(), target.float())
                    (null.grad,) = torch.autograd.grad(loss, [null])  # no gradients into the UNet's weights
                    optimizer.step()
                    loss_value, used = loss.item(), used + 1
                    if loss_value < self.early_stop_epsilon + i * 2e-5:
                        break
            null = null.detach()
            per_step.append(null.clone().to(bb.dtype))
            losses.append(loss_value)
            inner_used.append(used)
            # 4. Advance with the optimised embedding, from the current (not the pivot) latent
            with torch.no_grad():
                eps_u = bb.unet(x, t, encoder_hidden_states=null.to(bb.dtype)).sample
                x = scheduler.step(eps_u + guidance_scale * (eps_c - eps_u), t, x).prev_sample
        return InversionResult(
            latents=pivots,
            num_inference_steps=n,
            null_embeds=torch.cat(per_step),
            source_guidance=float(guidance_scale),
            info={"final_loss": losses[-1], "mean_loss": sum(losses) / len(losses),
                  "inner_steps": sum(inner_used)},
        )
