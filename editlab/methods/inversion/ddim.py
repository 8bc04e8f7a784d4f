"""DDIM inversion (Song et al., "Denoising Diffusion Implicit Models", ICLR 2021).

Run the deterministic DDIM update backwards, x_0 -> x_T, with the source prompt. Default guidance 1 (the
conditional branch alone), as Null-text inversion (Mokady et al., 2023) inverts before optimising and as
PIE-Bench's ``ddim_loop`` does (``cure-lab/PnPInversion`` ``models/p2p/inversion.py``): at guidance > 1 the
inversion error compounds. The source branch retraces the trajectory only at the scale it was inverted with, so
denoising at the editing scale (7.5 on SD) drifts from the source; the inversions that follow correct exactly
this.

The trajectory is shared: DDIM, Negative-prompt, Direct and Null-text inversion (its pivot) all start from the
same DDIM inversion of a source, which :class:`~editlab.methods.inversion_editing.InversionEditing` computes once
and caches (the ``ddim`` argument of :meth:`invert`). An editor may ask for it to be noise-regularised
(Pix2Pix-Zero, :mod:`editlab.methods.inversion.noise_reg`).
"""

from __future__ import annotations

import torch

from editlab.methods.common import ddim_invert
from editlab.methods.inversion.base import Inversion, InversionResult, Trajectory
from editlab.methods.inversion.noise_reg import NoiseRegularization, noise_regularizer
from editlab.methods.presets import Preset
from editlab.models.backbone import Backbone

#: Revision of :func:`ddim_trajectory` (part of the cache key of every shared trajectory).
TRAJECTORY_VERSION = 1

PIE_P2P = ("cure-lab/PnPInversion run_editing_p2p.py (P2PEditor num_ddim_steps=50, guidance_scale=7.5; "
           "DDIM inversion at guidance 1: models/p2p/inversion.py ddim_loop)")


def ddim_trajectory(backbone: Backbone, latents: torch.Tensor, source_embeds: torch.Tensor, num_inference_steps: int,
                    guidance_scale: float, null_embeds: torch.Tensor,
                    regularization: NoiseRegularization | None = None) -> torch.Tensor:
    """``(N + 1, C, h, w)`` DDIM inversion trajectory ``[x_0, ..., x_T]`` (optionally noise-regularised)."""
    noise_fn = noise_regularizer(regularization) if regularization is not None else None
    steps = ddim_invert(backbone, latents, source_embeds, num_inference_steps, guidance_scale, null_embeds, noise_fn)
    return torch.cat(steps)


class DDIMInversion(Inversion):
    name = "ddim"
    paper = "Song et al., DDIM, ICLR 2021"
    uses_ddim_trajectory = True
    cache_result = False  # the result is the shared trajectory (cached) plus flags
    presets = {"sd": Preset(source=PIE_P2P, settings={"num_inference_steps": 50, "target_guidance": 7.5})}

    def __init__(self, guidance_scale: float = 1.0) -> None:
        self.guidance_scale = guidance_scale

    def trajectory(self, backbone: Backbone, latents: torch.Tensor, source_embeds: torch.Tensor,
                   null_embeds: torch.Tensor, num_inference_steps: int, ddim: Trajectory | None = None) -> torch.Tensor:
        """``(N + 1, C, h, w)`` DDIM inversion trajectory at this inversion's guidance scale (the shared one when
        ``ddim`` is given)."""
        if ddim is not None:
            return ddim(self.guidance_scale)
        return ddim_trajectory(backbone, latents, source_embeds, num_inference_steps, self.guidance_scale, null_embeds)

    def invert(self, backbone, latents, source_embeds, null_embeds, num_inference_steps, guidance_scale,
               generator=None, ddim=None) -> InversionResult:
        # 1. Invert x_0 -> x_T with the source prompt (the shared trajectory)
        trajectory = self.trajectory(backbone, latents, source_embeds, null_embeds, num_inference_steps, ddim)
        # 2. The source branch retraces it at the inversion's own scale
        return InversionResult(latents=trajectory, num_inference_steps=num_inference_steps,
                               source_guidance=self.guidance_scale)
