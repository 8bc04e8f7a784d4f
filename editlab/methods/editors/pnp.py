"""Plug-and-Play (Tumanyan et al., "Plug-and-Play Diffusion Features for Text-Driven Image-to-Image
Translation", CVPR 2023).

The source branch is denoised beside the target and its features are plugged into the target, as the official
code does (MichalGeyer/pnp-diffusers ``pnp_utils.py``: ``register_conv_control_efficient``,
``register_attention_control_efficient``; the same code in cure-lab/PnPInversion ``run_editing_pnp.py``):

* **features**: during the first ``feature_injection`` of the steps, the hidden state of the *residual branch*
  of the decoder's residual block ``up_blocks[1].resnets[1]`` (the output of its ``conv2``, before the shortcut
  is added) is the source's; the target keeps its own shortcut path, ``conv_shortcut(x_target)``. The
  residual block is named by role: the decoder's second residual block at latent / 4 (16x16 on SD's 64x64
  latents, the paper's "decoder layer 4"); ``injection="block_output"`` replaces the block's whole output,
  shortcut included (editlab's earlier behaviour);
* **self-attention**: during the first ``attention_injection`` of the steps, the queries and keys of the
  decoder's self-attention at latent / 4, / 2 and / 1 but the first block (on SD 1.5: ``up_blocks[1].attentions
  [1, 2]`` and all of ``up_blocks[2:]``, the official ``res_dict``);
* the injected features come from the source evaluated with the empty prompt (its unconditional row) and go
  into both halves of the target's classifier-free guidance;
* the target's unconditional half uses the official negative prompt ("ugly, blurry, black, low res,
  unrealistic", paper preset ``sd``); backbones without a preset use none (the empty prompt). Where the
  inversion brings its own null embedding (Null-text, Negative-prompt inversion) the target keeps it.

The official code reads the source latents from the stored DDIM inversion (pnp-diffusers) or its unguided
reconstruction (PnPInversion's ``ddim+pnp``, one step behind: its step ``i`` reads the reconstruction after step
``i``); here the source branch is denoised at the scale its inversion retraces (1 for DDIM inversion, the
editing scale for Null-text), in step with the target, and Direct inversion puts it exactly on the stored
latents (PIE-Bench's "Direct + PnP"). Defaults from the official code: ``pnp_f_t=0.8``, ``pnp_attn_t=0.5``;
guidance and step count are the backbone's (SD: 7.5 and 50, as the official runs).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from editlab.methods.common import encode_prompt
from editlab.methods.editors.attention import AttentionControl, AttentionLayer, controlled_attention, layers_for
from editlab.methods.editors.base import Editor
from editlab.methods.editors.loop import EditRequest, Step, denoise
from editlab.methods.presets import Preset
from editlab.models.topology import Role, Topology

INJECTIONS = ("residual", "block_output")
OFFICIAL_NEGATIVE_PROMPT = "ugly, blurry, black, low res, unrealistic"
#: the decoder's second residual block at latent / 4: up_blocks[1].resnets[1] on SD 1.5
FEATURE_BLOCK = {"place": "up", "downscales": [4], "index": 1}
#: the decoder's self-attention at latent / 4, / 2, / 1 but the first block: up_blocks[1].attentions[1:] and
#: up_blocks[2:] on SD 1.5 (official: "blocks 4 - 11 of the decoder")
ATTENTION_BLOCKS = {"place": "up", "downscales": [1, 2, 4], "skip": 1}


def role(kind: str, spec: dict[str, Any]) -> Role:
    """A :class:`Role` from a config mapping (``place``, ``downscales``, ``skip``, ``index``)."""
    spec = dict(spec)
    if spec.get("downscales") is not None:
        spec["downscales"] = tuple(spec["downscales"])
    return Role(kind, **spec)


class PnPControl(AttentionControl):
    """Source queries/keys into the target's decoder self-attention; source residual features via a hook."""

    def __init__(self, feature_injection: float, attention_injection: float, attention_role: Role,
                 negative: torch.Tensor | None = None) -> None:
        super().__init__(num_branches=2)
        self.feature_injection = feature_injection
        self.attention_injection = attention_injection
        self.attention_role = attention_role
        self.negative = negative
        self.chosen: set[str] = set()

    def bind(self, layers: list[AttentionLayer]) -> None:
        self.chosen = {layer.name for layer in layers_for(layers, self.topology, self.attention_role, cross=False)}

    def select(self, layer: AttentionLayer) -> bool:
        return layer.name in self.chosen

    def active(self, layer: AttentionLayer) -> bool:
        return self.until(self.attention_injection)

    def step_begin(self, step: Step) -> None:
        super().step_begin(step)
        if self.negative is not None:  # the target's unconditional half: the negative prompt
            uncond = step.uncond.clone()
            uncond[1] = self.negative[0].to(uncond)
            step.uncond = uncond

    def inject(self, x: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        for row in self.rows_of(1, x.shape[0]):
            x[row] = x[0]  # row 0: the source branch's unconditional (empty prompt) row
        return x

    def edit_qkv(self, layer, q, k, v):
        return self.inject(q), self.inject(k), v

    def feature_hook(self, name: str):
        """A forward hook that plugs the source's features into the target rows of the hooked module's output."""

        def hook(module: torch.nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor:
            if not self.until(self.feature_injection):
                return output
            self.touched[name] += 1
            return self.inject(output)

        return hook


class PlugAndPlay(Editor):
    name = "pnp"
    paper = "Tumanyan et al., Plug-and-Play Diffusion Features, CVPR 2023"
    presets: ClassVar[dict[str, Preset]] = {
        "sd": Preset(
            source="MichalGeyer/pnp-diffusers pnp.py, pnp_utils.py, config_pnp.yaml; cure-lab/PnPInversion "
                   "run_editing_pnp.py (guidance 7.5, 50 DDIM steps: the backbone's)",
            settings={"feature_injection": 0.8, "attention_injection": 0.5,
                      "negative_prompt": OFFICIAL_NEGATIVE_PROMPT, "injection": "residual",
                      "feature_block": FEATURE_BLOCK, "attention_blocks": ATTENTION_BLOCKS},
        ),
    }
    #: what a backbone without a preset uses: the official fractions and layers, no negative prompt
    fallbacks: ClassVar[dict[str, Any]] = {
        "feature_injection": 0.8, "attention_injection": 0.5, "negative_prompt": "", "injection": "residual",
        "feature_block": FEATURE_BLOCK, "attention_blocks": ATTENTION_BLOCKS,
    }

    def __init__(self, feature_injection: float | None = None, attention_injection: float | None = None,
                 negative_prompt: str | None = None, injection: str | None = None,
                 feature_block: dict | None = None, attention_blocks: dict | None = None,
                 source_at_inversion_scale: bool = True) -> None:
        for key, value in (("feature_injection", feature_injection), ("attention_injection", attention_injection)):
            if value is not None and not 0.0 <= value <= 1.0:
                raise ValueError(f"{key} must be in [0, 1], got {value}")
        if injection is not None and injection not in INJECTIONS:
            raise ValueError(f"unknown PnP injection {injection!r}; valid: {', '.join(INJECTIONS)}")
        self.feature_injection = feature_injection
        self.attention_injection = attention_injection
        self.negative_prompt = negative_prompt
        self.injection = injection
        self.feature_block = feature_block
        self.attention_blocks = attention_blocks
        self.source_at_inversion_scale = source_at_inversion_scale

    def resolved(self) -> dict[str, Any]:
        """The settings this edit runs with: each one set (explicitly or by a preset), else its fallback."""
        return {k: getattr(self, k) if getattr(self, k) is not None else v for k, v in self.fallbacks.items()}

    def edit(self, request: EditRequest) -> torch.Tensor:
        s = self.resolved()
        unet = request.backbone.unet
        # 1. The target's negative prompt (only where the inversion leaves the null embedding to the empty prompt)
        negative = None
        if s["negative_prompt"] and request.result.null_embeds is None:
            negative = encode_prompt(request.backbone, [s["negative_prompt"]])
        control = PnPControl(s["feature_injection"], s["attention_injection"],
                             role("transformer", s["attention_blocks"]), negative)
        # 2. Feature injection at the decoder's residual block of the role (up_blocks[1].resnets[1] on SD 1.5):
        #    its residual branch (conv2's output, before the shortcut is added) or its whole output
        block = Topology.of(unet).select(role("resnet", s["feature_block"]))[0]
        resnet = unet.get_submodule(block.path)
        target = resnet.conv2 if s["injection"] == "residual" else resnet
        handle = target.register_forward_hook(control.feature_hook(block.path))
        # 3. Self-attention query/key injection, and the source and target denoised together
        cond = torch.cat([request.source_embeds, request.target_embeds])
        guidance = [request.source_guidance(self.source_at_inversion_scale), request.guidance_scale]
        try:
            with controlled_attention(unet, control):
                latents = denoise(request, cond, guidance, source=0, hooks=control)
        finally:
            handle.remove()
        return latents[1:2]
