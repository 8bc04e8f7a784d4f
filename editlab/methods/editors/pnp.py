"""Plug-and-Play (Tumanyan et al., "Plug-and-Play Diffusion Features for Text-Driven Image-to-Image
Translation", CVPR 2023).

The source branch is denoised beside the target and its features are plugged into the target: the output
of the decoder's residual block ``up_blocks[1].resnets[1]`` during the first ``feature_injection`` of the
steps, and the self-attention queries and keys of the decoder's transformer blocks (all of
``up_blocks[1:]`` but the first) during the first ``attention_injection``. As in the official code the
injected features come from the source evaluated with the empty prompt (its unconditional row) and go into
both halves of the target's classifier-free guidance.

The official code reads the source latents from the stored DDIM inversion, reconstructed without guidance;
here the source branch runs at the scale its inversion retraces (1 for DDIM inversion, the editing scale for
Null-text), and Direct inversion puts it exactly on the stored latents (PIE-Bench's "Direct + PnP").
Defaults from the official code: ``pnp_f_t=0.8``, ``pnp_attn_t=0.5``.
"""

from __future__ import annotations

from typing import Any

import torch

from editlab.methods.editors.attention import AttentionControl, AttentionLayer, controlled_attention
from editlab.methods.editors.base import Editor
from editlab.methods.editors.loop import EditRequest, denoise


class PnPControl(AttentionControl):
    """Source queries/keys into the target's decoder self-attention; source residual features via a hook."""

    def __init__(self, feature_injection: float, attention_injection: float) -> None:
        super().__init__(num_branches=2)
        self.feature_injection = feature_injection
        self.attention_injection = attention_injection

    def select(self, layer: AttentionLayer) -> bool:
        return (not layer.is_cross and layer.place == "up" and layer.block >= 1
                and (layer.block, layer.attention) != (1, 0))

    def active(self, layer: AttentionLayer) -> bool:
        return self.until(self.attention_injection)

    def _inject(self, x: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        for row in self.rows_of(1, x.shape[0]):
            x[row] = x[0]  # row 0: the source branch's unconditional (empty prompt) row
        return x

    def edit_qkv(self, layer, q, k, v):
        return self._inject(q), self._inject(k), v

    def feature_hook(self, module: torch.nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor:
        return self._inject(output) if self.until(self.feature_injection) else output


class PlugAndPlay(Editor):
    name = "pnp"
    paper = "Tumanyan et al., Plug-and-Play Diffusion Features, CVPR 2023"

    def __init__(self, feature_injection: float = 0.8, attention_injection: float = 0.5,
                 source_at_inversion_scale: bool = True) -> None:
        for key, value in (("feature_injection", feature_injection), ("attention_injection", attention_injection)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{key} must be in [0, 1], got {value}")
        self.feature_injection = feature_injection
        self.attention_injection = attention_injection
        self.source_at_inversion_scale = source_at_inversion_scale

    def edit(self, request: EditRequest) -> torch.Tensor:
        unet = request.backbone.unet
        control = PnPControl(self.feature_injection, self.attention_injection)
        # 1. Feature injection at the decoder's second residual block of its second level
        if len(unet.up_blocks) < 2 or len(unet.up_blocks[1].resnets) < 2:
            raise ValueError("Plug-and-Play needs a UNet with up_blocks[1].resnets[1]")
        handle = unet.up_blocks[1].resnets[1].register_forward_hook(control.feature_hook)
        # 2. Self-attention query/key injection, and the source and target denoised together
        cond = torch.cat([request.source_embeds, request.target_embeds])
        guidance = [request.source_guidance(self.source_at_inversion_scale), request.guidance_scale]
        try:
            with controlled_attention(unet, control):
                latents = denoise(request, cond, guidance, source=0, hooks=control)
        finally:
            handle.remove()
        return latents[1:2]
