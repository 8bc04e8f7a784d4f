"""Pix2Pix-Zero (Parmar et al., "Zero-shot Image-to-Image Translation", SIGGRAPH 2023).

The edit is a direction in text-embedding space, added to the source prompt's embedding: the difference
between the mean embeddings of target and source sentences (here the two prompts, so with ``direction_scale``
1 the target branch is conditioned on the target prompt's embedding). To keep the structure, at every step
the target latents first take one gradient step (cross-attention guidance) towards cross-attention maps
matching the source branch's at the same step: the loss is, per cross-attention layer, the squared
difference of the maps summed over positions and tokens and averaged over heads, summed over layers.

Defaults from the official code (pix2pixzero/pix2pix-zero): ``xa_guidance=0.1`` (the gradient step's
learning rate), edit direction added with weight 1.
"""

from __future__ import annotations

import torch

from editlab.methods.editors.attention import AttentionControl, AttentionLayer, controlled_attention
from editlab.methods.editors.base import Editor
from editlab.methods.editors.loop import EditRequest, Step, denoise, predict_noise


class CrossAttentionGuidance(AttentionControl):
    """Records cross-attention maps (with their graph when needed) and guides the target latents."""

    def __init__(self, request: EditRequest, amount: float) -> None:
        super().__init__(num_branches=2)
        self.request = request
        self.amount = amount
        self.recording = False
        self.maps: dict[str, torch.Tensor] = {}

    def select(self, layer: AttentionLayer) -> bool:
        return layer.is_cross

    def active(self, layer: AttentionLayer) -> bool:
        return self.recording

    def needs_probs(self, layer: AttentionLayer) -> bool:
        return True

    def edit_probs(self, layer: AttentionLayer, probs: torch.Tensor) -> torch.Tensor:
        self.maps[layer.name] = probs
        return probs

    def _maps(self, step: Step, latents: torch.Tensor, row: int) -> dict[str, torch.Tensor]:
        self.maps, self.recording = {}, True
        try:
            predict_noise(self.request.backbone, latents, step.t, step.cond[row : row + 1],
                          step.uncond[row : row + 1], step.guidance[row : row + 1])
        finally:
            self.recording = False
        return self.maps

    def guide(self, step: Step, latents: torch.Tensor) -> torch.Tensor:
        if self.amount == 0:
            return latents
        # 1. Reference maps: the source branch at its current latents
        reference = self._maps(step, latents[0:1], row=0)
        # 2. The target's maps, differentiable in its latents
        with torch.enable_grad():
            target = latents[1:2].detach().requires_grad_(True)
            current = self._maps(step, target, row=1)
            loss = 0.0
            for name, cur in current.items():
                ref = reference[name]
                if ref.shape != cur.shape:  # one branch ran without guidance: compare the conditional rows
                    ref, cur = ref[-1:], cur[-1:]
                loss = loss + ((cur - ref.detach()) ** 2).sum((-2, -1)).mean()
            (grad,) = torch.autograd.grad(loss, [target])
        # 3. One gradient step on the target's latents
        out = latents.clone()
        out[1] = (target - self.amount * grad)[0].detach()
        self.maps = {}
        return out


class Pix2PixZero(Editor):
    name = "pix2pix_zero"
    paper = "Parmar et al., Pix2Pix-Zero, SIGGRAPH 2023"

    def __init__(self, xa_guidance: float = 0.1, direction_scale: float = 1.0) -> None:
        if xa_guidance < 0:
            raise ValueError(f"xa_guidance must be >= 0, got {xa_guidance}")
        self.xa_guidance = xa_guidance
        self.direction_scale = direction_scale

    def edit(self, request: EditRequest) -> torch.Tensor:
        # 1. The edit direction in embedding space, added to the source prompt's embedding
        direction = request.target_embeds - request.source_embeds
        edited = request.source_embeds + self.direction_scale * direction
        # 2. Cross-attention guidance of the target towards the source's maps at every step
        control = CrossAttentionGuidance(request, self.xa_guidance)
        cond = torch.cat([request.source_embeds, edited])
        with controlled_attention(request.backbone.unet, control):
            latents = denoise(request, cond, [request.source_guidance(), request.guidance_scale], source=0,
                              hooks=control)
        return latents[1:2]
