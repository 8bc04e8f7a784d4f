"""The denoising loop every editor shares, with hooks.

A batch holds one row per *branch*: the source branch (the source prompt, which should retrace the source
image) and one or more target branches. The UNet batch stacks the unconditional rows of all branches, then
the conditional rows (``[uncond_0, ..., uncond_{B-1}, cond_0, ..., cond_{B-1}]``, as diffusers' pipelines
do); when every branch runs at guidance 1 the unconditional half is skipped. The inversion supplies the
starting state and the step (DDIM, DDPM with stored noise, EDICT's coupled step); editors plug in through
:class:`LoopHooks`: attention control, latent guidance before a step, latent blending after it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from editlab.methods.common import ddim_scheduler
from editlab.methods.inversion.base import Inversion, InversionResult
from editlab.models.backbone import Backbone
from editlab.types import Sample


@dataclass
class EditRequest:
    """One edit: the backbone, the inversion with its result, the prompts' embeddings and the scale."""

    backbone: Backbone
    inversion: Inversion
    result: InversionResult
    sample: Sample
    source_embeds: torch.Tensor  # (1, L, D)
    target_embeds: torch.Tensor  # (1, L, D)
    empty_embeds: torch.Tensor  # (1, L, D), the empty prompt: the default null embedding
    guidance_scale: float
    #: What the editor reports about this edit: JSON-able diagnostics and diagnostic images (e.g. a blend mask)
    info: dict[str, Any] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)

    def source_guidance(self, at_inversion_scale: bool = False) -> float:
        """Scale of the source branch: the editing scale, unless the inversion ties it to its own scale
        (DDPM, EDICT) or the editor asks for the scale the inversion retraces (``at_inversion_scale``)."""
        r = self.result
        if r.source_guidance is not None and (r.guidance_locked or at_inversion_scale):
            return r.source_guidance
        return self.guidance_scale


@dataclass
class Step:
    """What a hook sees of the current step (``index`` counts the steps this edit runs, from 0)."""

    index: int
    num_steps: int
    t: torch.Tensor
    cond: torch.Tensor  # (B, L, D)
    uncond: torch.Tensor  # (B, L, D)
    guidance: torch.Tensor  # (B,)


class LoopHooks:
    """Callbacks of :func:`denoise`; every method is optional (the defaults do nothing)."""

    def begin(self, num_steps: int) -> None:
        """Called once before the first step with the number of steps this edit runs."""

    def step_begin(self, step: Step) -> None:
        """Called before the step's UNet evaluations."""

    def guide(self, step: Step, latents: torch.Tensor) -> torch.Tensor:
        """Adjust the latents before they enter the step (e.g. Pix2Pix-Zero's cross-attention guidance)."""
        return latents

    def step_end(self, step: Step, latents: torch.Tensor) -> torch.Tensor:
        """Adjust the latents after the step (e.g. Prompt-to-Prompt's local blending)."""
        return latents

    def cond_latents(self, step: Step, latents: torch.Tensor) -> torch.Tensor | None:
        """Latents of the conditional half of ``latents``' noise prediction when they differ from the
        unconditional half's (Pix2Pix-Zero guides the two copies separately); None: the same latents."""
        return None


def predict_noise(backbone: Backbone, latents: torch.Tensor, t: torch.Tensor, cond: torch.Tensor,
                  uncond: torch.Tensor, guidance: torch.Tensor, cond_latents: torch.Tensor | None = None
                  ) -> torch.Tensor:
    """Classifier-free guided UNet output of each row, with a per-row scale; returned in ``latents``' dtype.

    ``cond_latents`` (default: ``latents``) is what the conditional half is evaluated at."""
    x = latents.to(backbone.dtype)
    xc = x if cond_latents is None else cond_latents.to(backbone.dtype)
    if bool((guidance == 1).all()):
        out = backbone.unet(xc, t, encoder_hidden_states=cond).sample
    else:
        both = backbone.unet(torch.cat([x, xc]), t, encoder_hidden_states=torch.cat([uncond, cond])).sample
        out_u, out_c = both.chunk(2)
        g = guidance.to(out_u.dtype).view(-1, 1, 1, 1)
        out = out_u + g * (out_c - out_u)
    return out.to(latents.dtype)


@torch.no_grad()
def denoise(request: EditRequest, cond: torch.Tensor, guidance: Sequence[float], source: int | None = None,
            hooks: LoopHooks | None = None, uncond: torch.Tensor | None = None) -> torch.Tensor:
    """Denoise every branch from the inversion's starting point; returns ``(B, C, h, w)`` final latents.

    ``cond`` holds one prompt embedding per branch, ``guidance`` one scale per branch, ``source`` the index
    of the source branch (``None`` when the editor runs none). ``uncond`` (one row per branch) replaces the
    inversion's null embedding at every step (Pix2Pix-Zero's negative prompt); by default each step takes the
    inversion's (per-step for Null-text, the source prompt for Negative-prompt, else the empty prompt).
    """
    bb, result, inversion = request.backbone, request.result, request.inversion
    hooks = hooks or LoopHooks()
    n_branches = cond.shape[0]
    # 1. The DDIM schedule the inversion was computed on
    scheduler = ddim_scheduler(bb)
    scheduler.set_timesteps(result.num_inference_steps, device=bb.device)
    scales = torch.tensor(list(guidance), device=bb.device)
    # 2. The starting state: the inversion's latents (and coupled sequence) for every branch
    state = inversion.initial_state(result, n_branches)
    first, last = result.start_step, result.num_inference_steps
    hooks.begin(last - first)
    for i in range(first, last):
        # 3. This step's null embedding (per-step for Null-text, the source prompt for Negative-prompt)
        if uncond is None:
            null = result.null_at(i)
            step_uncond = (request.empty_embeds if null is None else null).expand(n_branches, -1, -1)
        else:
            step_uncond = uncond
        step = Step(index=i - first, num_steps=last - first, t=scheduler.timesteps[i], cond=cond,
                    uncond=step_uncond, guidance=scales)
        hooks.step_begin(step)
        # 4. Hooks may move the latents before the step (guidance), the inversion takes the step
        state = tuple(hooks.guide(step, x) for x in state)

        def predict(x: torch.Tensor, step: Step = step) -> torch.Tensor:
            return predict_noise(bb, x, step.t, step.cond, step.uncond, step.guidance, hooks.cond_latents(step, x))

        state = inversion.denoise_step(scheduler, result, i, state, predict, source)
        # 5. ... and after it (blending)
        state = tuple(hooks.step_end(step, x) for x in state)
    return state[0]


def reconstruct(request: EditRequest) -> torch.Tensor:
    """Denoise the source branch alone with the source prompt at the editing scale: the inversion's
    reconstruction of the source, ``(1, C, h, w)``."""
    return denoise(request, request.source_embeds, [request.source_guidance()], source=0)
