"""DDIM inversion + prompt swap: the "no control" baseline of inversion-based editing, under its own name.

Invert the source image with the source prompt (DDIM inversion at guidance 1, as in Mokady et al. 2023), then
denoise the inverted noise with the target prompt at the editing scale. Every attention-control editor
(Prompt-to-Prompt, MasaCtrl, ...) is measured against this baseline: without control, the structure of the
source drifts as soon as guidance is > 1.

This is exactly ``method=edit editor=swap inversion=ddim`` (one behaviour, one code path): the same class with
its parts fixed, so the two give the same pixels and share the cached DDIM inversion of every source.
"""

from __future__ import annotations

from editlab.methods.inversion_editing import InversionEditing
from editlab.types import Condition, LearningStrategy, TaskType, Taxonomy


class DDIMSwap(InversionEditing):
    name = "ddim_swap"
    taxonomy = Taxonomy(
        learning_strategy=LearningStrategy.TRAINING_FREE,
        conditions=(Condition.PROMPT_PAIR,),
        tasks=tuple(TaskType),
        paper="Song et al., DDIM, ICLR 2021 (inversion); prompt-swap baseline of Hertz et al., 2023 "
              "(= method=edit editor=swap inversion=ddim)",
    )

    def __init__(self, guidance_scale: float | None = None, num_inference_steps: int | None = None,
                 cache: bool = True) -> None:
        super().__init__(inversion="ddim", editor="swap", guidance_scale=guidance_scale,
                         num_inference_steps=num_inference_steps, cache=cache)
        self.name = "ddim_swap"
