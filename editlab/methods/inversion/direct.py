"""Direct inversion (Ju et al., "PnP Inversion: Boosting Diffusion-based Editing with 3 Lines of Code",
ICLR 2024).

Keep the DDIM inversion trajectory (guidance 1) and, while editing, put the source branch back on it after
every denoising step: the source branch is exact at any guidance scale and the target branch, which reads its
attention or features, is left untouched. The official code adds the per-step difference between the stored
latent and the source branch's update; overwriting the source branch with the stored latent is the same
thing, computed without a separate pass.
"""

from __future__ import annotations

from editlab.methods.inversion.base import InversionResult
from editlab.methods.inversion.ddim import DDIMInversion
from editlab.methods.presets import Preset


class DirectInversion(DDIMInversion):
    name = "direct"
    paper = "Ju et al., PnP Inversion (Direct inversion), ICLR 2024"
    corrects_source_branch = True
    presets = {"sd": Preset(
        source="cure-lab/PnPInversion run_editing_p2p.py (directinversion+p2p: 50 steps, guidance 7.5; "
               "models/p2p/inversion.py DirectInversion)",
        settings={"num_inference_steps": 50, "target_guidance": 7.5})}

    def __init__(self, guidance_scale: float = 1.0) -> None:
        super().__init__(guidance_scale=guidance_scale)

    def invert(self, backbone, latents, source_embeds, null_embeds, num_inference_steps, guidance_scale,
               generator=None, ddim=None) -> InversionResult:
        # 1. DDIM inversion with the source prompt, every step's latents kept (the shared trajectory)
        trajectory = self.trajectory(backbone, latents, source_embeds, null_embeds, num_inference_steps, ddim)
        # 2. The editing loop resets the source branch to these latents after each step
        return InversionResult(latents=trajectory, num_inference_steps=num_inference_steps,
                               source_guidance=None, correct_source=True)
