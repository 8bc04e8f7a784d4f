"""The editor interface: given an inversion's result, produce the edited latents.

An editor builds its branches (source and target prompts), installs its attention control, and runs the
shared loop of :mod:`editlab.methods.editors.loop`. Settings are the constructor's keyword arguments.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch

from editlab.methods.editors.loop import EditRequest
from editlab.methods.inversion.base import Inversion
from editlab.methods.presets import Preset


class Editor(ABC):
    name: ClassVar[str] = "editor"
    paper: ClassVar[str] = ""
    #: Whether the editor denoises a source branch beside the target (every attention-control editor does).
    uses_source_branch: ClassVar[bool] = True
    #: Paper presets by backbone preset name; applied to settings left ``None`` (:mod:`editlab.methods.presets`).
    presets: ClassVar[dict[str, Preset]] = {}
    #: The prompt the source is inverted with: ``source`` (its prompt) or ``empty`` (the empty prompt, as the
    #: official MasaCtrl code inverts). Part of the inversion cache key.
    inversion_prompt: ClassVar[str] = "source"

    def settings(self) -> dict[str, Any]:
        params = inspect.signature(type(self).__init__).parameters
        return {k: getattr(self, k) for k in params if k != "self"}

    def incompatibility(self, inversion: Inversion) -> str | None:
        """Why this editor cannot use ``inversion``, or None when it can."""
        if inversion.corrects_source_branch and not self.uses_source_branch:
            return (f"{inversion.name} inversion only corrects the source branch, and this editor runs none "
                    f"(the result would equal inversion 'ddim')")
        return None

    @abstractmethod
    def edit(self, request: EditRequest) -> torch.Tensor:
        """The edited image's latents, ``(1, C, h, w)``."""

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.settings().items())
        return f"{type(self).__name__}({args})"
