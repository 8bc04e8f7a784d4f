"""Negative-prompt inversion (Miyake et al., "Negative-prompt Inversion: Fast Image Inversion for Editing
with Text-guided Diffusion Models", 2023).

Null-text inversion's optimised null embeddings end up close to the source prompt's embedding; Negative-prompt
inversion skips the optimisation and uses the source prompt's embedding as the null embedding at every step.
The source branch's guided prediction then equals its conditional one at any scale, so it retraces the
guidance-1 DDIM inversion; the target branch is guided away from the source prompt (a negative prompt).
"""

from __future__ import annotations

from editlab.methods.inversion.base import InversionResult
from editlab.methods.inversion.ddim import DDIMInversion
from editlab.methods.presets import Preset


class NegativePromptInversion(DDIMInversion):
    name = "npi"
    paper = "Miyake et al., Negative-prompt Inversion, 2023"
    presets = {"sd": Preset(
        source="cure-lab/PnPInversion run_editing_p2p.py (negative-prompt-inversion+p2p: 50 steps, guidance 7.5; "
               "models/p2p/inversion.py NegativePromptInversion)",
        settings={"num_inference_steps": 50, "target_guidance": 7.5})}

    def __init__(self, guidance_scale: float = 1.0) -> None:
        super().__init__(guidance_scale=guidance_scale)

    def invert(self, backbone, latents, source_embeds, null_embeds, num_inference_steps, guidance_scale,
               generator=None, ddim=None) -> InversionResult:
        # 1. DDIM inversion with the source prompt (guidance 1, as the paper): the shared trajectory
        trajectory = self.trajectory(backbone, latents, source_embeds, null_embeds, num_inference_steps, ddim)
        # 2. The source prompt's embedding is the null embedding of every step
        return InversionResult(latents=trajectory, num_inference_steps=num_inference_steps,
                               null_embeds=source_embeds.detach().clone(), source_guidance=None)
