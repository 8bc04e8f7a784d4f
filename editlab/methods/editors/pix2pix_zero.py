"""Pix2Pix-Zero (Parmar et al., "Zero-shot Image-to-Image Translation", SIGGRAPH 2023).

Follows the official code (``pix2pixzero/pix2pix-zero`` ``src/utils/edit_pipeline.py`` and ``src/edit_real.py``;
PIE-Bench's runs: ``cure-lab/PnPInversion`` ``run_editing_pix2pix_zero.py``):

1. The source is inverted with the source caption and its noise-regularised DDIM inversion
   (:mod:`editlab.methods.inversion.noise_reg`: auto-correlation and KL losses, lambda 20, 5 rounds); with
   DDIM-trajectory inversions (DDIM, Direct, Negative-prompt, Null-text) the shared trajectory is computed with
   that regularisation (``noise_regularization: null`` inverts plainly).
2. Reference pass: the caption branch is denoised alone from the inversion, with the caption as its negative
   prompt (so its guided prediction is the conditional one at any scale and it retraces the guidance-1
   inversion), recording every cross-attention layer's maps at every step. With inversions tied to their own
   scale or null embeddings (Null-text, edit-friendly DDPM, EDICT) the reference branch runs as their source
   branch does.
3. Editing pass: the target branch is conditioned on the caption's embedding plus the edit direction (the
   target prompt's embedding minus the source prompt's, times ``direction_scale``), with the caption as negative
   prompt. At every step both classifier-free-guidance copies of its latents take one gradient step of
   learning rate ``xa_guidance`` on the cross-attention loss (per layer, the squared difference to the
   reference maps summed over positions and tokens and averaged over the copies' heads, summed over layers);
   the noise of each half is predicted at its own copy and the DDIM step continues from the unconditional copy,
   as the official loop does (``latents = x_in.detach().chunk(2)[0]``).

The source is denoised once per step (the reference pass); the target is evaluated twice per step (the
guidance forward and backward, then the noise), as in the official code. Presets on Stable Diffusion: PIE-Bench's
50 steps at guidance 7.5; the paper's own script uses guidance 5 (``method.guidance_scale=5``).

Where editlab differs: the caption is the sample's source prompt (the official scripts caption the image with
BLIP); the reference maps are kept for the conditional rows only (with the caption as negative prompt both
halves of the official reference pass see the same latents and the same embedding, so their maps are equal).
"""

from __future__ import annotations

from typing import Any

import torch

from editlab.methods.editors.attention import AttentionControl, AttentionLayer, controlled_attention
from editlab.methods.editors.base import Editor
from editlab.methods.editors.loop import EditRequest, Step, denoise, predict_noise
from editlab.methods.inversion.base import InversionResult
from editlab.methods.inversion.noise_reg import NoiseRegularization
from editlab.methods.presets import Preset

#: The official regularisation of the inversion (``src/utils/ddim_inv.py``: lambda_ac = lambda_kl = 20, 5 rounds of
#: 5 auto-correlation rolls); ``None`` inverts plainly.
OFFICIAL_REGULARIZATION: dict[str, Any] = NoiseRegularization().as_dict()


class CrossAttentionMaps(AttentionControl):
    """Records every cross-attention layer's maps while ``recording`` (with their graph under autograd)."""

    def __init__(self, num_branches: int) -> None:
        super().__init__(num_branches=num_branches)
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


class ReferenceRecorder(CrossAttentionMaps):
    """Reference pass: the source branch's conditional-row maps at every step, moved to the CPU (as the official
    ``d_ref_t2attn``). With Direct inversion it puts the branch back on the stored latents after each step and
    keeps the offsets, which the editing pass adds to the target (PIE-Bench's ``latent_list`` correction)."""

    def __init__(self, result: InversionResult) -> None:
        super().__init__(num_branches=1)
        self.recording = True
        self.result = result
        self.reference: list[dict[str, torch.Tensor]] = []
        self.offsets: list[torch.Tensor] = []

    def step_begin(self, step: Step) -> None:
        super().step_begin(step)
        self.maps = {}

    def step_end(self, step: Step, latents: torch.Tensor) -> torch.Tensor:
        if len(self.reference) == step.index:  # once per step (EDICT calls this for each coupled sequence)
            self.reference.append({name: p[-1].detach().to("cpu", copy=True) for name, p in self.maps.items()})
        if not self.result.correct_source:
            return latents
        r = self.result
        stored = r.level(r.num_inference_steps - (r.start_step + step.index) - 1).to(latents.dtype)
        self.offsets.append(stored - latents)
        return stored.expand_as(latents).clone()


class CrossAttentionGuidance(CrossAttentionMaps):
    """Editing pass: one gradient step of each guidance copy of the target towards the reference maps."""

    def __init__(self, request: EditRequest, amount: float, reference: ReferenceRecorder) -> None:
        super().__init__(num_branches=1)
        self.request = request
        self.amount = amount
        self.reference = reference.reference
        self.offsets = reference.offsets
        # EDICT's coupled step predicts from a sequence it has just updated: there both halves use the
        # unconditional copy
        self.separate_copies = request.result.coupled is None
        self.copies: dict[int, torch.Tensor] = {}  # id(unconditional copy) -> conditional copy

    def loss(self, maps: dict[str, torch.Tensor], step: int, device: torch.device) -> torch.Tensor:
        """Sum over layers of the squared difference to the reference, summed over positions and tokens, averaged
        over the rows' heads (``((curr - ref) ** 2).sum((1, 2)).mean(0)`` of the official loop)."""
        total = torch.zeros((), device=device)
        for name, cur in maps.items():
            ref = self.reference[step][name].to(cur.device, cur.dtype)
            total = total + ((cur - ref) ** 2).sum((-2, -1)).mean()
        return total

    def guide(self, step: Step, latents: torch.Tensor) -> torch.Tensor:
        self.copies = {}
        if self.amount == 0:
            return latents
        # 1. Both guidance copies of the target's latents, differentiable; one UNet pass records their maps
        two_halves = bool((step.guidance != 1).any())
        with torch.enable_grad():
            x = torch.cat([latents, latents] if two_halves else [latents]).detach().requires_grad_(True)
            self.maps, self.recording = {}, True
            try:
                predict_noise(self.request.backbone, x[:1], step.t, step.cond, step.uncond, step.guidance,
                              cond_latents=x[1:] if two_halves else None)
            finally:
                self.recording = False
            loss = self.loss(self.maps, step.index, x.device)
            (grad,) = torch.autograd.grad(loss, [x])
        self.maps = {}
        # 2. One SGD step of each copy; the DDIM step continues from the unconditional copy
        moved = (x - self.amount * grad).detach()
        uncond_copy = moved[:1].clone()
        if two_halves and self.separate_copies:
            self.copies[id(uncond_copy)] = moved[1:]
        return uncond_copy

    def cond_latents(self, step: Step, latents: torch.Tensor) -> torch.Tensor | None:
        """3. The conditional half is predicted at its own guided copy."""
        return self.copies.get(id(latents))

    def step_end(self, step: Step, latents: torch.Tensor) -> torch.Tensor:
        return latents + self.offsets[step.index].to(latents) if self.offsets else latents


class Pix2PixZero(Editor):
    name = "pix2pix_zero"
    paper = "Parmar et al., Pix2Pix-Zero, SIGGRAPH 2023"
    presets = {"sd": Preset(
        source="cure-lab/PnPInversion run_editing_pix2pix_zero.py (NUM_DDIM_STEPS = 50, XA_GUIDANCE = 0.1, "
               "guidance_scale=7.5, negative_prompt = the caption)",
        settings={"num_inference_steps": 50, "target_guidance": 7.5})}

    def __init__(self, xa_guidance: float = 0.1, direction_scale: float = 1.0,
                 noise_regularization: dict[str, Any] | None = OFFICIAL_REGULARIZATION) -> None:
        if xa_guidance < 0:
            raise ValueError(f"xa_guidance must be >= 0, got {xa_guidance}")
        self.xa_guidance = xa_guidance
        self.direction_scale = direction_scale
        self.noise_regularization = None if noise_regularization is None else dict(noise_regularization)
        NoiseRegularization.from_spec(self.noise_regularization)  # validate at config time

    def inversion_regularization(self) -> NoiseRegularization | None:
        return NoiseRegularization.from_spec(self.noise_regularization)

    def edit(self, request: EditRequest) -> torch.Tensor:
        unet, result = request.backbone.unet, request.result
        # 1. Reference pass: the source branch alone, its cross-attention maps recorded at every step. With the
        #    caption as negative prompt the guided prediction is the conditional one: guidance 1 computes it.
        #    Inversions with their own null embeddings or scale (Null-text, NPI, DDPM, EDICT) run as they retrace.
        own_scale = result.null_embeds is not None or result.guidance_locked
        recorder = ReferenceRecorder(result)
        with controlled_attention(unet, recorder):
            denoise(request, request.source_embeds, [request.source_guidance() if own_scale else 1.0], source=None,
                    hooks=recorder)
        # 2. The edit direction in embedding space, added to the caption's embedding
        edited = request.source_embeds + self.direction_scale * (request.target_embeds - request.source_embeds)
        # 3. Editing pass: the target alone, with the caption as negative prompt and cross-attention guidance
        guidance = CrossAttentionGuidance(request, self.xa_guidance, recorder)
        with controlled_attention(unet, guidance):
            latents = denoise(request, edited, [request.guidance_scale], source=None, hooks=guidance,
                              uncond=request.source_embeds)
        return latents
