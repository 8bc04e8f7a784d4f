"""MasaCtrl (Cao et al., "MasaCtrl: Tuning-Free Mutual Self-Attention Control for Consistent Image Synthesis
and Editing", ICCV 2023).

Mutual self-attention: from step ``start_step`` on, in the transformer blocks from ``start_layer`` on, the
target branch's queries attend to the source branch's keys and values instead of its own, so the target
takes its content (textures, identity) from the source while the target prompt sets layout and pose. Both
classifier-free-guidance halves are controlled, as in the official code; cross-attention is untouched.

Defaults from the official code (TencentARC/MasaCtrl): ``start_step=4`` of 50 steps and ``start_layer=10``
of SD-1.5's 16 transformer blocks (the decoder's two finest levels). Both are given on that reference
(``reference_steps``, ``reference_layers``) and rescaled to the run's step count and the UNet's depth.
"""

from __future__ import annotations

import torch

from editlab.methods.editors.attention import AttentionControl, AttentionLayer, controlled_attention
from editlab.methods.editors.base import Editor
from editlab.methods.editors.loop import EditRequest, denoise


class MutualSelfAttentionControl(AttentionControl):
    """The target rows' self-attention keys and values are replaced by the source rows' of the same half."""

    def __init__(self, start_step: float, start_layer: float) -> None:
        super().__init__(num_branches=2)
        self.start_step_fraction = start_step
        self.start_layer_fraction = start_layer
        self.first_layer = 0

    def bind(self, layers: list[AttentionLayer]) -> None:
        depth = 1 + max(layer.order for layer in layers)
        self.first_layer = int(round(self.start_layer_fraction * depth))

    def select(self, layer: AttentionLayer) -> bool:
        return not layer.is_cross

    def active(self, layer: AttentionLayer) -> bool:
        first_step = int(round(self.start_step_fraction * self.num_steps))
        return self.step >= first_step and layer.order >= self.first_layer

    def edit_qkv(self, layer, q, k, v):
        k, v = k.clone(), v.clone()
        for src in self.rows_of(0, k.shape[0]):
            k[src + 1], v[src + 1] = k[src], v[src]
        return q, k, v


class MasaCtrl(Editor):
    name = "masactrl"
    paper = "Cao et al., MasaCtrl, ICCV 2023"

    def __init__(self, start_step: int = 4, start_layer: int = 10, reference_steps: int = 50,
                 reference_layers: int = 16) -> None:
        if not 0 <= start_step <= reference_steps or not 0 <= start_layer <= reference_layers:
            raise ValueError("start_step and start_layer must lie within reference_steps and reference_layers")
        self.start_step = start_step
        self.start_layer = start_layer
        self.reference_steps = reference_steps
        self.reference_layers = reference_layers

    def edit(self, request: EditRequest) -> torch.Tensor:
        # 1. Mutual self-attention from the start step and layer, rescaled to this run and UNet
        control = MutualSelfAttentionControl(self.start_step / self.reference_steps,
                                             self.start_layer / self.reference_layers)
        # 2. Denoise source and target together
        cond = torch.cat([request.source_embeds, request.target_embeds])
        with controlled_attention(request.backbone.unet, control):
            latents = denoise(request, cond, [request.source_guidance(), request.guidance_scale], source=0,
                              hooks=control)
        return latents[1:2]
