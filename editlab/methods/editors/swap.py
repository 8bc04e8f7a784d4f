"""Prompt swap, the "no control" editor: denoise the inverted source with the target prompt.

The baseline every attention-control editor is measured against (Hertz et al., 2023, Fig. 2): the target
branch starts from the inversion's latents and nothing ties it to the source, so the layout drifts as soon
as the prompt changes. With DDIM inversion this is the ``ddim_swap`` method (a name for exactly this pair);
with the other inversions it is each paper's own plain editing (Null-text or Negative-prompt inversion then the
target prompt, EDICT's and edit-friendly DDPM's native editing). Preset on Stable Diffusion: the
Prompt-to-Prompt notebook's 50 DDIM steps at guidance 7.5.
"""

from __future__ import annotations

import torch

from editlab.methods.editors.base import Editor
from editlab.methods.editors.loop import EditRequest, denoise
from editlab.methods.presets import Preset


class PromptSwap(Editor):
    name = "swap"
    paper = "prompt-swap baseline (Hertz et al., Prompt-to-Prompt, ICLR 2023)"
    uses_source_branch = False
    presets = {"sd": Preset(
        source="google/prompt-to-prompt prompt-to-prompt_stable.ipynb (NUM_DIFFUSION_STEPS = 50, GUIDANCE_SCALE = 7.5)",
        settings={"num_inference_steps": 50, "target_guidance": 7.5})}

    def __init__(self) -> None:
        pass

    def edit(self, request: EditRequest) -> torch.Tensor:
        # 1. One branch: the target prompt at the editing scale, from the inverted source
        return denoise(request, request.target_embeds, [request.guidance_scale], source=None)
