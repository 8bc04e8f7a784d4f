"""The method interface: a method edits one sample.

A method declares its survey taxonomy (learning strategy, the input conditions it needs, the task types
it targets) and the backbone families it supports, is set up once with a
:class:`~editlab.models.backbone.Backbone` (its paper preset for that backbone, if any, fills the settings left
``None``: :mod:`editlab.methods.presets`), then ``edit`` is called per sample with a seeded generator. The
runner checks conditions before calling ``edit``: a sample lacking one is "not applicable"; a present but
unusable one (an empty prompt) is an error for that sample.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import torch

from editlab.methods.presets import Preset, apply_preset
from editlab.types import Condition, EditOutput, Sample, SampleError, Taxonomy


class UnsupportedBackbone(ValueError):
    """The method cannot run on this backbone family; raised before any weight is loaded."""


class EditMethod(ABC):
    """Base class of every editing method."""

    #: Registry name; also the default row label in tables.
    name: ClassVar[str] = "method"
    taxonomy: ClassVar[Taxonomy]
    #: Backbone families (:attr:`Backbone.family`) this method runs on.
    families: ClassVar[tuple[str, ...]] = ("sd",)
    #: Paper presets by backbone preset name (``sd``: Stable Diffusion's weights); see :mod:`editlab.methods.presets`.
    presets: ClassVar[dict[str, Preset]] = {}
    #: Whether :meth:`setup` needs a backbone; False (e.g. imported outputs) and the runner loads none.
    needs_backbone: ClassVar[bool] = True
    #: Whether :meth:`edit` uses a sample's several input images (``Sample.reference_images``).
    multi_image: ClassVar[bool] = False
    #: Whether the runner's wall time and memory measure this method's editing; False for edits made elsewhere
    #: (their records say ``"runtime": "unknown (imported)"``).
    measured: ClassVar[bool] = True

    def __init__(self, **settings: Any) -> None:
        self.settings = settings
        self.backbone = None
        self.cache_dir: Path | None = None
        self.preset_record: dict[str, Any] = {"preset": None}

    def check_family(self, family: str) -> None:
        """Raise :class:`UnsupportedBackbone` unless this method runs on backbones of ``family``."""
        if family not in self.families:
            raise UnsupportedBackbone(
                f"method '{self.name}' does not support backbone family '{family}'; "
                f"families that work: {', '.join(self.families)}")

    def setup(self, backbone: Any, cache_dir: Path | None = None) -> None:
        """Receive the backbone's components once, before the first edit.

        Settings left ``None`` take this method's paper preset for the backbone (if it has one).
        ``cache_dir`` is a folder the method may use to store reusable intermediate results (e.g. inversions)
        across runs; the runner passes ``<results_dir>/_cache``.
        """
        self.check_family(getattr(backbone, "family", "sd"))
        self.backbone = backbone
        self.cache_dir = cache_dir
        self.preset_record = apply_preset(self, self.presets, getattr(backbone, "preset", None))

    def describe(self) -> dict[str, Any]:
        """What the run records about the set-up method: name, families, the preset applied."""
        return {"name": self.name, "families": list(self.families), "preset": self.preset_record}

    @abstractmethod
    def edit(self, sample: Sample, generator: torch.Generator) -> EditOutput:
        """Edit ``sample`` and return the edited image (same size as the source)."""

    # --- helpers shared by all methods -------------------------------------------------------------
    def missing_conditions(self, sample: Sample) -> list[Condition]:
        """Conditions this method needs that the sample does not carry at all."""
        return [c for c in self.taxonomy.conditions if not sample.has(c)]

    def not_applicable_reason(self, sample: Sample) -> str | None:
        """Why this method cannot edit ``sample`` at all (a missing condition, several input images for a method
        that takes one), or None."""
        missing = self.missing_conditions(sample)
        if missing:
            return "sample has no " + ", ".join(c.value for c in missing)
        if sample.reference_images and not self.multi_image:
            return (f"sample has {len(sample.reference_images) + 1} input images; method '{self.name}' takes one "
                    f"image")
        return None

    def check_inputs(self, sample: Sample) -> None:
        """Raise :class:`SampleError` for conditions that are present but unusable."""
        needs = self.taxonomy.conditions
        if Condition.PROMPT_PAIR in needs:
            if not sample.source_prompt.strip():
                raise SampleError("empty source prompt")
            if not sample.target_prompt.strip():
                raise SampleError("empty target prompt")
        if Condition.INSTRUCTION in needs and not sample.instruction.strip():
            raise SampleError("empty instruction")
        if Condition.MASK in needs and sample.mask is not None:
            if sample.mask.size != sample.source_image.size:
                raise SampleError(
                    f"mask size {sample.mask.size} differs from image size {sample.source_image.size}"
                )
            if sample.mask.getextrema()[1] == 0:
                raise SampleError("mask is empty (all zero)")
