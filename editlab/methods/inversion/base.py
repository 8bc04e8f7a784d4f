"""What an inversion is and what it hands to editors.

An inversion maps a source image (and its prompt) to the starting point of a denoising trajectory, plus
whatever the trajectory needs to come back to the source: per-step latents (Direct inversion), optimised
null embeddings (Null-text inversion), noise maps (edit-friendly DDPM inversion), or a coupled second
sequence (EDICT). All of it travels in one :class:`InversionResult`, which is what the inversion cache stores.

An inversion also knows how to take one denoising step from its result (:meth:`Inversion.denoise_step`):
editors run the shared loop of :mod:`editlab.methods.editors.loop`, and the step itself (DDIM, DDPM with
stored noise, EDICT's coupled step) comes from the inversion that made the starting point.

Indexing convention: denoising step ``i`` (0-based, ``i < N``) runs at ``scheduler.timesteps[i]`` and maps
``latents[N - i]`` to ``latents[N - i - 1]``; ``latents[0]`` is the VAE encoding of the source image.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

import torch
from diffusers import DDIMScheduler

from editlab.methods.presets import Preset, apply_preset
from editlab.models.backbone import Backbone
from editlab.types import LearningStrategy

Predict = Callable[[torch.Tensor], torch.Tensor]
"""Noise prediction for a batch of branch latents at the current step (guidance already applied)."""

Trajectory = Callable[[float], torch.Tensor]
"""The shared DDIM inversion trajectory ``(N + 1, C, h, w)`` of the source at a guidance scale (cached by the
caller, :mod:`editlab.methods.inversion.cache`): one DDIM inversion serves every inversion built on it."""

TENSOR_FIELDS = ("latents", "null_embeds", "noise_maps", "coupled")


@dataclass
class InversionResult:
    """Everything an editor needs from an inversion (tensors on the backbone's device).

    Attributes:
        latents: ``(N + 1, C, h, w)`` latents per noise level; ``latents[0]`` encodes the source image and
            ``latents[N - i]`` is the input of denoising step ``i``. DDIM-family inversions store the DDIM
            inversion trajectory, DDPM the independently noised latents, EDICT its ``x`` sequence. Rows above
            ``N - start_step`` are unused (zeros) for inversions that skip the first steps.
        num_inference_steps: ``N``, the number of DDIM steps of the schedule the result belongs to.
        start_step: the first denoising step to run (DDPM's skip, EDICT's strength); 0 otherwise.
        null_embeds: ``(N, L, D)`` per-step unconditional embeddings (Null-text) or ``(1, L, D)`` for all
            steps (Negative-prompt: the source prompt's embedding); ``None`` means the empty prompt's.
        noise_maps: ``(N, C, h, w)`` edit-friendly DDPM noise ``z`` of each denoising step.
        coupled: ``(1, C, h, w)`` EDICT's second latent ``y`` at ``start_step``.
        source_guidance: the guidance scale under which the source branch retraces the inversion
            (``None``: any scale, e.g. Direct inversion overwrites the source branch anyway).
        guidance_locked: the source branch must run at ``source_guidance`` (DDPM noise maps and EDICT's
            coupled pair are only consistent with the scale they were computed with).
        correct_source: Direct inversion: after every step the source branch is reset to ``latents``.
        info: small JSON-able diagnostics (e.g. Null-text's final losses).
    """

    latents: torch.Tensor
    num_inference_steps: int
    start_step: int = 0
    null_embeds: torch.Tensor | None = None
    noise_maps: torch.Tensor | None = None
    coupled: torch.Tensor | None = None
    source_guidance: float | None = None
    guidance_locked: bool = False
    correct_source: bool = False
    info: dict[str, Any] = field(default_factory=dict)

    def level(self, k: int) -> torch.Tensor:
        """``(1, C, h, w)`` latents at noise level ``k`` (``k = N - i`` is the input of step ``i``)."""
        return self.latents[k : k + 1]

    def null_at(self, step: int) -> torch.Tensor | None:
        """``(1, L, D)`` unconditional embedding of denoising step ``step``, or None for the empty prompt."""
        if self.null_embeds is None:
            return None
        return self.null_embeds[step if self.null_embeds.shape[0] > 1 else 0].unsqueeze(0)

    def tensors(self) -> dict[str, torch.Tensor]:
        return {k: getattr(self, k) for k in TENSOR_FIELDS if getattr(self, k) is not None}

    def scalars(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in TENSOR_FIELDS}

    @classmethod
    def from_parts(cls, tensors: dict[str, torch.Tensor], scalars: dict[str, Any]) -> InversionResult:
        return cls(**tensors, **scalars)

    def to(self, device: torch.device, dtype: torch.dtype | None = None) -> InversionResult:
        moved = {k: v.to(device=device, dtype=dtype or v.dtype) for k, v in self.tensors().items()}
        return InversionResult.from_parts(moved, self.scalars())


def ddim_alphas(scheduler: DDIMScheduler, step: int) -> tuple[float, float]:
    """``(alpha_bar_t, alpha_bar_prev)`` of denoising step ``step`` (as ``DDIMScheduler.step`` uses them)."""
    t = int(scheduler.timesteps[step])
    prev = t - scheduler.config.num_train_timesteps // scheduler.num_inference_steps
    a_t = float(scheduler.alphas_cumprod[t])
    a_prev = float(scheduler.alphas_cumprod[prev]) if prev >= 0 else float(scheduler.final_alpha_cumprod)
    return a_t, a_prev


def to_epsilon(scheduler: DDIMScheduler, output: torch.Tensor, sample: torch.Tensor, t: int) -> torch.Tensor:
    """Convert a UNet output to a noise prediction (epsilon, v-prediction or sample prediction)."""
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return output
    a_t = float(scheduler.alphas_cumprod[int(t)])
    if kind == "v_prediction":
        return a_t**0.5 * output + (1 - a_t) ** 0.5 * sample
    if kind == "sample":
        return (sample - a_t**0.5 * output) / (1 - a_t) ** 0.5
    raise ValueError(f"unsupported prediction type {kind!r}")


class Part:
    """What inversions and editors (the two parts of :class:`~editlab.methods.inversion_editing.InversionEditing`)
    share: settings (the constructor's keyword arguments), paper presets and the run settings of the papers.

    A preset (:mod:`editlab.methods.presets`, keyed by the backbone's preset name) fills the part's settings left
    ``None`` and may also give the paper's ``num_inference_steps`` and ``target_guidance`` (the guidance of the
    target branch, i.e. the run's editing scale): these two are never set in a part's config; InversionEditing
    takes them for its own settings left ``None``, the inversion's before the editor's (EDICT's guidance 3 and
    edit-friendly DDPM's 100 steps at guidance 15 belong to those algorithms).
    """

    #: Paper presets by backbone preset name; applied to settings left ``None`` (:mod:`editlab.methods.presets`).
    presets: ClassVar[dict[str, Preset]] = {}
    #: The paper's step count and target guidance for this part (set by a preset only).
    num_inference_steps: int | None = None
    target_guidance: float | None = None

    def settings(self) -> dict[str, Any]:
        """The constructor's arguments and their current values."""
        params = inspect.signature(type(self).__init__).parameters
        return {k: getattr(self, k) for k in params if k != "self"}

    def configure(self, preset_name: str | None) -> dict[str, Any]:
        """Apply the paper preset of the backbone's preset name (settings left ``None`` only); return the record."""
        return apply_preset(self, self.presets, preset_name)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.settings().items())
        return f"{type(self).__name__}({args})"


class Inversion(Part, ABC):
    """Base class of the inversions; settings are the constructor's keyword arguments.

    Subclasses implement :meth:`invert`; those whose trajectory is not plain DDIM also override
    :meth:`initial_state` and :meth:`denoise_step`. ``version`` names the algorithm's revision: it is part of
    the cache key, so a change of what an inversion computes must bump it (stale results are then never read).
    """

    name: ClassVar[str] = "inversion"
    paper: ClassVar[str] = ""
    version: ClassVar[int] = 1
    learning_strategy: ClassVar[LearningStrategy] = LearningStrategy.TRAINING_FREE
    #: Whether the result depends on the random generator (then the cache key includes its seed).
    stochastic: ClassVar[bool] = False
    #: Whether the editing loop resets the source branch to the stored latents (Direct inversion).
    corrects_source_branch: ClassVar[bool] = False
    #: Whether the result is built on the shared DDIM inversion trajectory (the ``ddim`` argument of
    #: :meth:`invert`); such inversions honour an editor's noise regularisation of that trajectory.
    uses_ddim_trajectory: ClassVar[bool] = False
    #: Whether the result itself is worth caching (False when it is the shared trajectory plus flags).
    cache_result: ClassVar[bool] = True

    def inversion_guidance(self, guidance_scale: float) -> float:
        """The guidance scale the inversion itself runs with, given the editing scale."""
        return float(getattr(self, "guidance_scale", None) or guidance_scale)

    @abstractmethod
    def invert(
        self,
        backbone: Backbone,
        latents: torch.Tensor,
        source_embeds: torch.Tensor,
        null_embeds: torch.Tensor,
        num_inference_steps: int,
        guidance_scale: float,
        generator: torch.Generator | None = None,
        ddim: Trajectory | None = None,
    ) -> InversionResult:
        """Invert ``latents`` (VAE latents of the source) under ``source_embeds``.

        ``null_embeds`` is the empty prompt's embedding; ``guidance_scale`` is the editing scale; ``ddim`` gives
        the shared DDIM inversion trajectory (None: computed here, uncached).
        """

    # --- denoising from a result (DDIM by default) --------------------------------------------------
    def initial_state(self, result: InversionResult, num_branches: int) -> tuple[torch.Tensor, ...]:
        """The loop's state at ``start_step``: one latent batch with a row per branch."""
        x = result.level(result.num_inference_steps - result.start_step)
        return (x.expand(num_branches, *x.shape[1:]).clone(),)

    def denoise_step(
        self,
        scheduler: DDIMScheduler,
        result: InversionResult,
        step: int,
        state: tuple[torch.Tensor, ...],
        predict: Predict,
        source: int | None,
    ) -> tuple[torch.Tensor, ...]:
        """One DDIM step of every branch; Direct inversion then resets the source branch."""
        (x,) = state
        t = scheduler.timesteps[step]
        x = scheduler.step(predict(x), t, x).prev_sample
        if result.correct_source and source is not None:
            x[source] = result.level(result.num_inference_steps - step - 1)[0].to(x.dtype)
        return (x,)
