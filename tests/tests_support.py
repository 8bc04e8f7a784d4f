"""Methods that misbehave on purpose, for error-isolation tests, and a predictable one for chained edits."""

from __future__ import annotations

import numpy as np
import torch
from PIL import ImageOps

from editlab.methods.base import EditMethod
from editlab.types import Condition, EditOutput, LearningStrategy, Sample, Taxonomy

_TAX = Taxonomy(LearningStrategy.TRAINING_FREE, (Condition.PROMPT_PAIR,))


class NaNMethod(EditMethod):
    """Returns NaN for the first sample, a valid image otherwise."""

    name = "nan_method"
    taxonomy = _TAX

    def edit(self, sample: Sample, generator: torch.Generator) -> EditOutput:
        arr = np.asarray(sample.source_image, dtype=np.float32) / 255.0
        if sample.id == "good0":
            arr[0, 0, 0] = np.nan
        return EditOutput(image=arr)


class RaisingMethod(EditMethod):
    """Raises on the first sample."""

    name = "raising_method"
    taxonomy = _TAX

    def edit(self, sample: Sample, generator: torch.Generator) -> EditOutput:
        if sample.id == "good0":
            raise RuntimeError("boom")
        return EditOutput(image=sample.source_image)


class UnavailableMethod(EditMethod):
    """Fails at setup, as a method whose public weights are not available offline does."""

    name = "unavailable_method"
    taxonomy = _TAX

    def setup(self, backbone, cache_dir=None) -> None:
        raise RuntimeError("needs public weights 'org/model', not available offline")

    def edit(self, sample: Sample, generator: torch.Generator) -> EditOutput:
        raise AssertionError("never called")


class InvertMethod(EditMethod):
    """Inverts the source image (two chained turns give the original back) and returns the source it was given
    as the extra ``seen``; raises on the sample id ``fail_on``."""

    name = "invert_method"
    taxonomy = Taxonomy(LearningStrategy.TRAINING_FREE, (Condition.INSTRUCTION,))

    def __init__(self, fail_on: str | None = None, **settings) -> None:
        super().__init__(**settings)
        self.fail_on = fail_on

    def edit(self, sample: Sample, generator: torch.Generator) -> EditOutput:
        if sample.id == self.fail_on:
            raise RuntimeError("boom")
        return EditOutput(image=ImageOps.invert(sample.source_image), extras={"seen": sample.source_image})
