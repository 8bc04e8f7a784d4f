"""DDIM inversion (Song et al., "Denoising Diffusion Implicit Models", ICLR 2021).

Run the deterministic DDIM update backwards, x_0 -> x_T, with the source prompt. Default guidance 1 (the
conditional branch alone), as Null-text inversion (Mokady et al., 2023) inverts before optimising: at
guidance > 1 the inversion error compounds. The source branch retraces the trajectory only at the scale it
was inverted with, so denoising at the editing scale (7.5 on SD) drifts from the source; the inversions
that follow correct exactly this.
"""

from __future__ import annotations

import torch

from editlab.methods.common import ddim_invert
from editlab.methods.inversion.base import Inversion, InversionResult
from editlab.models.backbone import Backbone


class DDIMInversion(Inversion):
    name = "ddim"
    paper = "Song et al., DDIM, ICLR 2021"

    def __init__(self, guidance_scale: float = 1.0) -> None:
        self.guidance_scale = guidance_scale

    def trajectory(self, backbone: Backbone, latents: torch.Tensor, source_embeds: torch.Tensor,
                   null_embeds: torch.Tensor, num_inference_steps: int) -> torch.Tensor:
        """``(N + 1, C, h, w)`` DDIM inversion trajectory at this inversion's guidance scale."""
        steps = ddim_invert(backbone, latents, source_embeds, num_inference_steps, self.guidance_scale, null_embeds)
        return torch.cat(steps)

    def invert(self, backbone, latents, source_embeds, null_embeds, num_inference_steps, guidance_scale,
               generator=None) -> InversionResult:
        # 1. Invert x_0 -> x_T with the source prompt
        trajectory = self.trajectory(backbone, latents, source_embeds, null_embeds, num_inference_steps)
        # 2. The source branch retraces it at the inversion's own scale
        return InversionResult(latents=trajectory, num_inference_steps=num_inference_steps,
                               source_guidance=self.guidance_scale)
