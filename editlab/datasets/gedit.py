"""GEdit-Bench (Liu et al., 2025, Step1X-Edit): 606 real-user editing requests in 11 categories, each written in
English and in Chinese (1,212 rows), with the "intersection" subset the paper also reports.

Published format: the Hugging Face dataset ``stepfun-ai/GEdit-Bench`` (one split, ``train``), columns ``task_type``
(the category), ``key``, ``instruction``, ``instruction_language`` (``en`` / ``cn``), ``input_image``,
``input_image_raw`` and ``Intersection_exist`` (Step1X-Edit ``GEdit-Bench/generate_image_example.py``). Local copies
read here: the hub's parquet or arrow files under ``root`` (``data/train-*.parquet``, ``train/*.arrow``, the
hub's ``default/train/*.parquet`` conversion; reading them needs ``pyarrow``), a ``datasets.save_to_disk`` folder,
or ``train/metadata.jsonl`` whose image columns are paths.

The source image is ``input_image``: GEdit's scorer (``test_gedit_score.py``) judges an edit against it (saved as
``<key>_SRCIMG.png``) after resizing the edit to its size; ``input_image_raw`` (what the generation example feeds a
model, resized to about 512x512 pixels of area) is kept available with ``source: input_image_raw``. Sample ids are
``<key>_<language>``; ``meta["gedit"]`` keeps ``key``, ``task_type``, ``language`` and ``intersection``, which the
``outputs`` method's ``gedit`` layout uses to find ``fullset/<task_type>/<language>/<key>.png``.
"""

from __future__ import annotations

from collections.abc import Iterable

from editlab.datasets.folder import LocalBenchmark
from editlab.datasets.magicbrush import HFTable, find_hf_table
from editlab.types import Sample, SampleError, TaskType

GEDIT_HUB = "stepfun-ai/GEdit-Bench"
GEDIT_HUB_SPLIT = "train"
IMAGE_COLUMNS = ("input_image", "input_image_raw")
LANGUAGES = ("en", "cn", "all")
SUBSETS = ("fullset", "intersection")

#: GEdit category (``task_type``) -> survey task type; None where the survey has no counterpart
GEDIT_TYPES: dict[str, TaskType | None] = {
    "background_change": TaskType.BACKGROUND_CHANGE,
    "color_alter": TaskType.COLOR_CHANGE,
    "material_alter": TaskType.TEXTURE_CHANGE,
    "motion_change": TaskType.POSE_ACTION,
    "ps_human": None,  # portrait retouching (face and body shaping, makeup)
    "style_change": TaskType.STYLE_CHANGE,
    "subject-add": TaskType.OBJECT_ADDITION,
    "subject-remove": TaskType.OBJECT_REMOVAL,
    "subject-replace": TaskType.OBJECT_REPLACEMENT,
    "text_change": None,  # rendering or changing text in the image
    "tone_transfer": None,  # global tone, lighting, season or weather
}
_REQUIRED = ("key", "task_type", "instruction", "instruction_language")


class GEditBenchDataset(LocalBenchmark):
    """GEdit-Bench from a local copy of the hub dataset; ``language`` en | cn | all, ``subset`` fullset |
    intersection (rows with ``Intersection_exist``)."""

    name = "gedit"
    label = "GEdit-Bench"
    single_split = "test"
    entries: dict[str, int]

    def __init__(
        self,
        root: str,
        split: str = "test",
        task_types: Iterable[str | TaskType] | None = None,
        limit: int | None = None,
        on_error: str = "raise",
        language: str = "en",
        subset: str = "fullset",
        source: str = "input_image",
    ) -> None:
        if language not in LANGUAGES or subset not in SUBSETS or source not in IMAGE_COLUMNS:
            raise ValueError(f"language must be one of {', '.join(LANGUAGES)}, subset one of {', '.join(SUBSETS)} "
                             f"and source one of {', '.join(IMAGE_COLUMNS)}; got {language!r}, {subset!r}, {source!r}")
        super().__init__(root, split, task_types, limit, on_error)
        self.language, self.subset, self.source = language, subset, source
        table = find_hf_table(self.root, GEDIT_HUB_SPLIT, IMAGE_COLUMNS)
        if table is None:
            raise self.not_found(
                f"{GEDIT_HUB} not found under {self.root}: expected the hub's files ({self.root}/data/train-*.parquet "
                f"or {self.root}/train/*.arrow), a datasets.save_to_disk folder, or {self.root}/train/metadata.jsonl")
        self.table: HFTable = table
        self.tasks: dict[str, TaskType | None] = {}
        self._read()

    def _read(self) -> None:
        for index, row in enumerate(self.table.rows):
            where = self.table.where(index)
            lang = str(row.get("instruction_language") or "")
            if self.language != "all" and lang and lang != self.language:
                continue
            if self.subset == "intersection" and not row.get("Intersection_exist") and not row.get("_problem"):
                continue
            key = row.get("key")
            sid = f"{key}_{lang}" if key is not None and lang else f"row{index}"
            if sid in self.entries:
                sid = f"{sid}-row{index}"
                self.issues.add(sid, where, "duplicate (key, instruction_language)")
            self.entries[sid] = index
            category = row.get("task_type")
            self.tasks[sid] = GEDIT_TYPES.get(str(category))
            missing = [k for k in _REQUIRED if row.get(k) in (None, "")]
            if row.get("_problem"):
                self.issues.add(sid, where, str(row["_problem"]))
            elif missing:
                self.issues.add(sid, where, f"missing field(s) {', '.join(missing)}")
            elif category not in GEDIT_TYPES:
                self.issues.add(sid, where, f"unknown task_type {category!r}; GEdit-Bench defines "
                                            f"{', '.join(GEDIT_TYPES)}")
            elif lang not in ("en", "cn"):
                self.issues.add(sid, where, f"unknown instruction_language {lang!r} (expected en or cn)")

    def _index(self) -> list[tuple[str, TaskType | None]]:
        return [(sid, self.tasks.get(sid)) for sid in self.entries]

    def load(self, sample_id: str) -> Sample:
        index = self.entry(sample_id)
        row = self.table.rows[index]
        where = f"{self.table.source.name} row {index}"
        try:
            image = self.table.image(index, self.source)
        except SampleError as err:
            raise SampleError(f"{self.source}: {err} ({where})") from err
        return Sample(
            id=sample_id,
            source_image=image.convert("RGB"),
            instruction=str(row["instruction"]),
            task_type=self.tasks.get(sample_id),
            meta={"gedit": {"key": str(row["key"]), "task_type": str(row["task_type"]),
                            "language": str(row["instruction_language"]),
                            "intersection": bool(row.get("Intersection_exist"))},
                  # what the vie_gedit judge protocol reads (configs/metrics/judge/vie_gedit.yaml `fields`)
                  "judge_fields": {"gedit_task_type": str(row["task_type"]),
                                   "intersection_exist": bool(row.get("Intersection_exist")),
                                   "instruction_language": str(row["instruction_language"])}},
        )
