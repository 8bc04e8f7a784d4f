"""Core data types shared by datasets, methods, metrics and the runner.

The survey taxonomy (Huang et al., 2024, "Diffusion Model-Based Image Editing: A Survey") is encoded in
three enums: the learning strategy of a method, the input conditions it needs, and the editing task types.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from PIL import Image


class LearningStrategy(str, Enum):
    """How a method acquires its editing ability (survey, Sec. 3-5)."""

    TRAINING_BASED = "training-based"
    TESTING_TIME_FINETUNING = "testing-time fine-tuning"
    TRAINING_FREE = "training- and fine-tuning-free"


class Condition(str, Enum):
    """Input conditions a method can need (survey, Table 1 columns)."""

    PROMPT_PAIR = "prompt pair"
    INSTRUCTION = "instruction"
    MASK = "mask"
    REFERENCE_IMAGE = "reference image"
    POINTS = "points"


class TaskFamily(str, Enum):
    SEMANTIC = "semantic"
    STYLISTIC = "stylistic"
    STRUCTURAL = "structural"


class TaskType(str, Enum):
    """Editing task types of the survey, each belonging to one family."""

    OBJECT_ADDITION = "object_addition"
    OBJECT_REMOVAL = "object_removal"
    OBJECT_REPLACEMENT = "object_replacement"
    BACKGROUND_CHANGE = "background_change"
    EMOTION_EXPRESSION = "emotion_expression"
    COLOR_CHANGE = "color_change"
    TEXTURE_CHANGE = "texture_change"
    STYLE_CHANGE = "style_change"
    OBJECT_MOVEMENT = "object_movement"
    SIZE_CHANGE = "size_change"
    POSE_ACTION = "pose_action"
    VIEWPOINT = "viewpoint"

    @property
    def family(self) -> TaskFamily:
        return _FAMILY[self]


_FAMILY = {
    TaskType.OBJECT_ADDITION: TaskFamily.SEMANTIC,
    TaskType.OBJECT_REMOVAL: TaskFamily.SEMANTIC,
    TaskType.OBJECT_REPLACEMENT: TaskFamily.SEMANTIC,
    TaskType.BACKGROUND_CHANGE: TaskFamily.SEMANTIC,
    TaskType.EMOTION_EXPRESSION: TaskFamily.SEMANTIC,
    TaskType.COLOR_CHANGE: TaskFamily.STYLISTIC,
    TaskType.TEXTURE_CHANGE: TaskFamily.STYLISTIC,
    TaskType.STYLE_CHANGE: TaskFamily.STYLISTIC,
    TaskType.OBJECT_MOVEMENT: TaskFamily.STRUCTURAL,
    TaskType.SIZE_CHANGE: TaskFamily.STRUCTURAL,
    TaskType.POSE_ACTION: TaskFamily.STRUCTURAL,
    TaskType.VIEWPOINT: TaskFamily.STRUCTURAL,
}

ALL_TASKS: tuple[TaskType, ...] = tuple(TaskType)


@dataclass(frozen=True)
class Taxonomy:
    """Survey metadata a method declares; drives `editlab list`, applicability and table grouping."""

    learning_strategy: LearningStrategy
    conditions: tuple[Condition, ...]
    tasks: tuple[TaskType, ...] = ALL_TASKS
    paper: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "learning_strategy": self.learning_strategy.value,
            "conditions": [c.value for c in self.conditions],
            "tasks": [t.value for t in self.tasks],
            "paper": self.paper,
        }


@dataclass
class Sample:
    """One editing request.

    Images are RGB PIL images; ``mask`` is a single-channel ("L") PIL image of the same size where
    non-zero marks the region to edit. ``points`` are (x, y) pixel pairs: handle points then target points
    for drag-style editing.

    ``reference_images`` are a benchmark's further input images, in order, when a request has several (KRIS-Bench's
    multi-element composition: the elements to put into ``source_image``; its temporal prediction: the other
    frames). A method that takes one image is "not applicable" to such a sample
    (:meth:`editlab.methods.base.EditMethod.not_applicable_reason`). ``reference_image`` stays the single exemplar
    of exemplar-guided editing.

    Multi-turn (chained) editing is declared by the dataset, not here, because the runner must know it for
    cached records without decoding anything: :meth:`editlab.datasets.base.EditDataset.chain_from` names the
    sample whose edited output replaces ``source_image`` when this sample is edited, and
    :meth:`~editlab.datasets.base.EditDataset.scored` says whether this sample's edit enters the metrics.
    A method always sees the image it must edit in ``source_image``.
    """

    id: str
    source_image: Image.Image
    source_prompt: str | None = None
    target_prompt: str | None = None
    instruction: str | None = None
    mask: Image.Image | None = None
    reference_image: Image.Image | None = None
    reference_images: list[Image.Image] | None = None
    points: list[tuple[float, float]] | None = None
    task_type: TaskType | None = None
    target_image: Image.Image | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def has(self, condition: Condition) -> bool:
        """Whether this sample carries ``condition`` at all (an empty string still counts as present)."""
        if condition is Condition.PROMPT_PAIR:
            return self.source_prompt is not None and self.target_prompt is not None
        if condition is Condition.INSTRUCTION:
            return self.instruction is not None
        if condition is Condition.MASK:
            return self.mask is not None
        if condition is Condition.REFERENCE_IMAGE:
            return self.reference_image is not None
        if condition is Condition.POINTS:
            return self.points is not None
        raise ValueError(condition)


@dataclass
class EditOutput:
    """What a method returns: the edited image plus optional diagnostic images (inferred mask, ...).

    ``image`` is a PIL image or a float array/tensor in [0, 1] of shape (H, W, 3); float outputs let the
    runner detect NaN or inf, which a uint8 image would hide.
    """

    image: Any
    extras: dict[str, Image.Image] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)


class SampleError(Exception):
    """A problem with one sample's input; recorded for that sample, the run goes on."""


class NotApplicable(Exception):
    """The sample lacks a condition the method needs; recorded as "not applicable", not as an error."""
