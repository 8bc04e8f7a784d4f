"""ShapesWorld as an editlab dataset: a fixed, regenerable benchmark with exact ground-truth targets."""

from __future__ import annotations

import zlib
from collections.abc import Iterable

import numpy as np
from PIL import Image

from editlab.datasets.base import EditDataset
from editlab.datasets.shapesworld.tasks import WorldEdit, make_edit
from editlab.datasets.shapesworld.world import GRID, Obj, Scene, render
from editlab.types import Sample, SampleError, TaskType

SPLITS: tuple[str, ...] = ("test", "train")
_SPLIT_SALT = {"test": 0x5EED_7E57, "train": 0x7A1_2A1}


def _seed(split: str, seed: int, task: TaskType, index: int) -> list[int]:
    """Seed sequence for one sample; distinct per (split, seed, task type, index)."""
    return [_SPLIT_SALT[split], seed, zlib.crc32(task.value.encode()), index]


def generate(split: str, task: TaskType, index: int, seed: int = 0, size: int = 64) -> WorldEdit:
    """The edit behind sample ``index`` of ``task`` in ``split`` (deterministic)."""
    rng = np.random.default_rng(_seed(split, seed, task, index))
    return make_edit(rng, task, size)


class ShapesWorldDataset(EditDataset):
    """``per_task`` procedurally generated edits per task type, regenerated on ``load``.

    Ids look like ``"color_change-0007"``. The ``test`` and ``train`` splits draw from disjoint seed
    streams, so the benchmark never changes and never overlaps training data.
    """

    name = "shapesworld"

    def __init__(
        self,
        split: str = "test",
        task_types: Iterable[str | TaskType] | None = None,
        limit: int | None = None,
        per_task: int = 20,
        size: int = 64,
        seed: int = 0,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r} for shapesworld; valid: {', '.join(SPLITS)}")
        super().__init__(split=split, task_types=task_types, limit=limit)
        if per_task < 0:
            raise ValueError(f"per_task must be >= 0, got {per_task}")
        self.per_task = per_task
        self.size = size
        self.seed = seed

    def _index(self) -> list[tuple[str, TaskType | None]]:
        return [(f"{t.value}-{i:04d}", t) for t in TaskType for i in range(self.per_task)]

    def _parse(self, sample_id: str) -> tuple[TaskType, int]:
        task_name, _, num = sample_id.rpartition("-")
        try:
            task = TaskType(task_name)
            index = int(num)
        except ValueError:
            raise SampleError(f"unknown shapesworld sample id {sample_id!r}") from None
        if not 0 <= index < self.per_task or sample_id != f"{task.value}-{index:04d}":
            raise SampleError(f"unknown shapesworld sample id {sample_id!r} (split {self.split!r})")
        return task, index

    def edit(self, sample_id: str) -> WorldEdit:
        """The underlying :class:`WorldEdit` of a sample (scenes, arrays, meta)."""
        task, index = self._parse(sample_id)
        return generate(self.split, task, index, self.seed, self.size)

    def load(self, sample_id: str) -> Sample:
        edit = self.edit(sample_id)
        reference = None
        points = None
        if edit.task_type is TaskType.OBJECT_REPLACEMENT and edit.edited_index is not None:
            # the replacement object alone, centred on the scene's background
            new = edit.target.objects[edit.edited_index]
            centred = Obj(**{**new.to_dict(), "x": 1, "y": 1})
            solo = Scene((centred,), edit.target.background, edit.target.style)
            reference = Image.fromarray(render(solo, self.size))
        if edit.task_type is TaskType.OBJECT_MOVEMENT and edit.edited_index is not None:
            old, new = edit.source.objects[edit.edited_index], edit.target.objects[edit.edited_index]
            points = [
                (GRID[old.x] * self.size, GRID[old.y] * self.size),
                (GRID[new.x] * self.size, GRID[new.y] * self.size),
            ]
        return Sample(
            id=sample_id,
            source_image=Image.fromarray(edit.source_image),
            source_prompt=edit.source_prompt,
            target_prompt=edit.target_prompt,
            instruction=edit.instruction,
            mask=Image.fromarray(edit.mask.astype(np.uint8) * 255).convert("L"),
            reference_image=reference,
            points=points,
            task_type=edit.task_type,
            target_image=Image.fromarray(edit.target_image),
            meta={"shapesworld": edit.meta(), **({"blend_words": words} if (words := edit.blend_words()) else {})},
        )
