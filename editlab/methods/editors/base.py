"""The editor interface: given an inversion's result, produce the edited latents.

An editor builds its branches (source and target prompts), installs its attention control, and runs the
shared loop of :mod:`editlab.methods.editors.loop`. Settings are the constructor's keyword arguments; paper
presets and the paper's step count / target guidance work as for inversions
(:class:`~editlab.methods.inversion.base.Part`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import torch

from editlab.methods.editors.loop import EditRequest
from editlab.methods.inversion.base import Inversion, Part
from editlab.methods.inversion.noise_reg import NoiseRegularization


class Editor(Part, ABC):
    name: ClassVar[str] = "editor"
    paper: ClassVar[str] = ""
    #: Whether the editor denoises a source branch beside the target (every attention-control editor does).
    uses_source_branch: ClassVar[bool] = True
    #: The prompt the source is inverted with: ``source`` (its prompt) or ``empty`` (the empty prompt, as the
    #: official MasaCtrl code inverts). Part of the inversion cache key.
    inversion_prompt: ClassVar[str] = "source"

    def inversion_regularization(self) -> NoiseRegularization | None:
        """The noise regularisation the shared DDIM inversion trajectory must be computed with for this editor
        (Pix2Pix-Zero's), or None for plain DDIM inversion. Part of the inversion cache key."""
        return None

    def incompatibility(self, inversion: Inversion) -> str | None:
        """Why this editor cannot use ``inversion``, or None when it can."""
        if inversion.corrects_source_branch and not self.uses_source_branch:
            return (f"{inversion.name} inversion only corrects the source branch, and this editor runs none "
                    f"(the result would equal inversion 'ddim')")
        return None

    @abstractmethod
    def edit(self, request: EditRequest) -> torch.Tensor:
        """The edited image's latents, ``(1, C, h, w)``; diagnostics go to ``request.info`` / ``request.extras``."""
