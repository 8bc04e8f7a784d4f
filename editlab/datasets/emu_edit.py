"""Emu Edit test set (Sheynin et al., 2024): instructions by crowd workers on MagicBrush's input images, in 7
categories, with input and output captions (no ground-truth image).

Published format: the Hugging Face dataset ``facebook/emu_edit_test_set``, columns ``instruction``, ``image``,
``task``, ``split``, ``idx``, ``hash``, ``input_caption``, ``output_caption``, files ``data/validation-*.parquet``
(2,022 rows) and ``data/test-*.parquet`` (3,589 rows).

**The split names are swapped upstream.** Meta's own release of Emu Edit's outputs on this benchmark,
``facebook/emu_edit_test_set_generations``, calls the 2,022 rows ``test`` and the 3,589 rows ``validation``;
the test set's repository names them the other way round. editlab follows the generations release (the outputs
behind the paper's numbers): ``split=test`` reads the hub's ``validation`` files (2,022 rows), ``split=validation``
the hub's ``test`` files (3,589 rows). ``hub_split_names=true`` uses the hub's file names as they are. Each sample
records the hub file split it came from and the row's own ``split`` column in ``meta["emu_edit"]``.

Samples carry the instruction, the captions as a prompt pair (input caption -> output caption) and ``task``
mapped onto the survey's task types (see :data:`EMU_TASKS`).
"""

from __future__ import annotations

from collections.abc import Iterable

from editlab.datasets.folder import LocalBenchmark, resize_square
from editlab.datasets.magicbrush import HFTable, find_hf_table
from editlab.types import Sample, SampleError, TaskType

EMU_HUB = "facebook/emu_edit_test_set"
#: editlab split -> the hub's file split holding it (see the module docstring)
SWAPPED = {"test": "validation", "validation": "test"}
IMAGE_COLUMNS = ("image",)

#: Emu Edit task -> survey task type; None where the survey has no single counterpart
EMU_TASKS: dict[str, TaskType | None] = {
    "background": TaskType.BACKGROUND_CHANGE,
    "global": None,  # comprehensive changes of the whole image
    "style": TaskType.STYLE_CHANGE,
    "remove": TaskType.OBJECT_REMOVAL,
    "add": TaskType.OBJECT_ADDITION,
    "local": None,  # localized modifications of an object's attributes or identity
    "texture": TaskType.TEXTURE_CHANGE,  # "color/texture alterations"
}
_REQUIRED = ("instruction", "task", "idx", "input_caption", "output_caption")


class EmuEditDataset(LocalBenchmark):
    """The Emu Edit test set from a local copy of the hub dataset (``split`` test | validation, paper names)."""

    name = "emu_edit"
    label = "Emu Edit test set"
    entries: dict[str, int]

    def __init__(
        self,
        root: str,
        split: str = "test",
        task_types: Iterable[str | TaskType] | None = None,
        limit: int | None = None,
        on_error: str = "raise",
        hub_split_names: bool = False,
        size: int | None = None,
    ) -> None:
        if split not in SWAPPED:
            raise ValueError(f"unknown Emu Edit split {split!r}; valid: {', '.join(SWAPPED)}")
        super().__init__(root, split, task_types, limit, on_error)
        self.hub_split = split if hub_split_names else SWAPPED[split]
        self.size = size
        table = find_hf_table(self.root, self.hub_split, IMAGE_COLUMNS)
        if table is None:
            raise self.not_found(
                f"{EMU_HUB} split '{split}' (hub files '{self.hub_split}') not found under {self.root}: expected "
                f"{self.root}/data/{self.hub_split}-*.parquet (needs pyarrow) or {self.root}/{self.hub_split}/"
                f"metadata.jsonl")
        self.table: HFTable = table
        self.tasks: dict[str, TaskType | None] = {}
        for index, row in enumerate(self.table.rows):
            where = self.table.where(index)
            sid = f"{row['idx']}" if row.get("idx") is not None else f"row{index}"
            if sid in self.entries:
                sid = f"{sid}-row{index}"
                self.issues.add(sid, where, "duplicate idx")
            self.entries[sid] = index
            self.tasks[sid] = EMU_TASKS.get(str(row.get("task")))
            missing = [k for k in _REQUIRED if row.get(k) in (None, "")]
            if row.get("_problem"):
                self.issues.add(sid, where, str(row["_problem"]))
            elif missing:
                self.issues.add(sid, where, f"missing field(s) {', '.join(missing)}")
            elif row["task"] not in EMU_TASKS:
                self.issues.add(sid, where, f"unknown task {row['task']!r}; Emu Edit defines {', '.join(EMU_TASKS)}")

    def _index(self) -> list[tuple[str, TaskType | None]]:
        return [(sid, self.tasks.get(sid)) for sid in self.entries]

    def load(self, sample_id: str) -> Sample:
        index = self.entry(sample_id)
        row = self.table.rows[index]
        where = f"{self.table.source.name} row {index}"
        try:
            image = self.table.image(index, "image")
        except SampleError as err:
            raise SampleError(f"image: {err} ({where})") from err
        return Sample(
            id=sample_id,
            source_image=resize_square(image.convert("RGB"), self.size),
            source_prompt=str(row["input_caption"]),
            target_prompt=str(row["output_caption"]),
            instruction=str(row["instruction"]),
            task_type=self.tasks.get(sample_id),
            meta={"emu_edit": {"idx": row["idx"], "task": row["task"], "hash": row.get("hash"),
                               "hub_split": self.hub_split, "split_column": row.get("split")}},
        )
