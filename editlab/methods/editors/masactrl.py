"""MasaCtrl (Cao et al., "MasaCtrl: Tuning-Free Mutual Self-Attention Control for Consistent Image Synthesis
and Editing", ICCV 2023).

Mutual self-attention: from step ``start_step`` on, in the transformer blocks from ``start_layer`` on, the
target branch's queries attend to the source branch's keys and values instead of its own, so the target
takes its content (textures, identity) from the source while the target prompt sets layout and pose. Both
classifier-free-guidance halves are controlled and cross-attention is untouched, as in the official code
(TencentARC/MasaCtrl ``masactrl/masactrl.py``: ``MutualSelfAttentionControl``, ``masactrl_utils.py``).

Real-image editing as the official code runs it (``playground_real.ipynb``; cure-lab/PnPInversion
``run_editing_masactrl.py``): the source is DDIM-inverted with the **empty prompt**, and the batch
``["", target_prompt]`` is denoised at one guidance scale (7.5). With the empty prompt in both halves of its
guidance, the source branch's noise prediction does not depend on the scale: it retraces the unconditional
inversion and reconstructs the source, so the keys and values the target copies are the source image's
(``source_prompt="empty"``, the default). ``source_prompt="source"`` inverts and denoises the source branch
with the source prompt at the editing scale instead (editlab's earlier behaviour; with DDIM inversion that
branch drifts from the source).

Layers by role: ``start_layer`` counts SD 1.5's 16 transformer blocks (10 = ``up_blocks[2].attentions[0]``: the
decoder's two finest levels, latent / 2 and / 1); on another UNet the block at the same place, level and
relative position is used (:meth:`editlab.models.topology.Topology.translate`). ``start_step`` is given on
``reference_steps`` (the official 50) and rescaled to the run's step count. Defaults from the official code:
``start_step=4``, ``start_layer=10``; guidance and steps are the backbone's (SD: 7.5 and 50, as the official runs).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from editlab.methods.editors.attention import AttentionControl, AttentionLayer, controlled_attention
from editlab.methods.editors.base import Editor
from editlab.methods.editors.loop import EditRequest, denoise
from editlab.methods.presets import Preset
from editlab.models.topology import sd15_topology

SOURCE_PROMPTS = ("empty", "source")


class MutualSelfAttentionControl(AttentionControl):
    """The target rows' self-attention keys and values are replaced by the source rows' of the same half."""

    def __init__(self, start_step_fraction: float, start_layer: int) -> None:
        super().__init__(num_branches=2)
        self.start_step_fraction = start_step_fraction
        self.start_layer = start_layer
        self.first_layer = start_layer

    def bind(self, layers: list[AttentionLayer]) -> None:
        # SD 1.5's block number -> the block playing its part on this UNet (the identity on SD 1.5's topology)
        self.first_layer = self.topology.translate(self.start_layer, sd15_topology())

    def select(self, layer: AttentionLayer) -> bool:
        return not layer.is_cross and layer.order >= self.first_layer

    def active(self, layer: AttentionLayer) -> bool:
        return self.step >= int(round(self.start_step_fraction * self.num_steps))

    def edit_qkv(self, layer, q, k, v):
        k, v = k.clone(), v.clone()
        for src in self.rows_of(0, k.shape[0]):
            k[src + 1], v[src + 1] = k[src], v[src]
        return q, k, v


class MasaCtrl(Editor):
    name = "masactrl"
    paper = "Cao et al., MasaCtrl, ICCV 2023"
    presets: ClassVar[dict[str, Preset]] = {
        "sd": Preset(
            source="TencentARC/MasaCtrl masactrl/masactrl.py, playground_real.ipynb; cure-lab/PnPInversion "
                   "run_editing_masactrl.py (guidance 7.5, 50 DDIM steps: the backbone's)",
            settings={"start_step": 4, "start_layer": 10, "source_prompt": "empty"},
        ),
    }
    fallbacks: ClassVar[dict[str, Any]] = {"start_step": 4, "start_layer": 10, "source_prompt": "empty"}

    def __init__(self, start_step: int | None = None, start_layer: int | None = None,
                 source_prompt: str | None = None, reference_steps: int = 50) -> None:
        if source_prompt is not None and source_prompt not in SOURCE_PROMPTS:
            raise ValueError(f"unknown MasaCtrl source_prompt {source_prompt!r}; valid: {', '.join(SOURCE_PROMPTS)}")
        if start_step is not None and not 0 <= start_step <= reference_steps:
            raise ValueError(f"start_step must lie within 0..reference_steps ({reference_steps}), got {start_step}")
        if start_layer is not None and not 0 <= start_layer <= len(sd15_topology().transformers):
            raise ValueError(f"start_layer counts SD 1.5's 16 transformer blocks (0..16), got {start_layer}")
        self.start_step = start_step
        self.start_layer = start_layer
        self.source_prompt = source_prompt
        self.reference_steps = reference_steps

    def resolved(self) -> dict[str, Any]:
        """The settings this edit runs with: each one set (explicitly or by a preset), else its fallback."""
        return {k: getattr(self, k) if getattr(self, k) is not None else v for k, v in self.fallbacks.items()}

    @property
    def inversion_prompt(self) -> str:  # the source is inverted with the prompt its branch is denoised with
        return self.resolved()["source_prompt"]

    def branches(self, request: EditRequest) -> tuple[torch.Tensor, list[float]]:
        """Prompt embeddings and guidance scales of the source and target branches."""
        if self.resolved()["source_prompt"] == "empty":
            # the official ["", target] at one scale: with "" in both halves the source's scale does not matter
            source, scale = request.empty_embeds, request.source_guidance()
        else:
            source, scale = request.source_embeds, request.source_guidance()
        return torch.cat([source, request.target_embeds]), [scale, request.guidance_scale]

    def denoise_branches(self, request: EditRequest) -> torch.Tensor:
        """Both branches' final latents, ``(2, C, h, w)``: the source's reconstruction, then the edit."""
        s = self.resolved()
        # 1. Mutual self-attention from the start step and layer (rescaled to this run, resolved on this UNet)
        control = MutualSelfAttentionControl(s["start_step"] / self.reference_steps, s["start_layer"])
        # 2. Denoise source and target together
        cond, guidance = self.branches(request)
        with controlled_attention(request.backbone.unet, control):
            return denoise(request, cond, guidance, source=0, hooks=control)

    def edit(self, request: EditRequest) -> torch.Tensor:
        return self.denoise_branches(request)[1:2]
