"""KRIS-Bench (Wu et al., 2025): knowledge-based reasoning edits in 20 categories, grouped into 7 dimensions and
3 knowledge types (factual, conceptual, procedural).

Published format (``KRIS_Bench/`` of the Hugging Face dataset ``Liang0223/KRIS_Bench``, read by the official
scripts of github.com/mercurystraw/Kris_Bench)::

    <root>/KRIS_Bench/<category>/annotation.json    {id: {"ori_img": <file or [files]>, "gt_img": <file or "">,
                                                         "ins_en": <instruction>, "explain_en": <explanation>}}
    <root>/KRIS_Bench/<category>/<images>

(``root`` may also be the ``KRIS_Bench`` folder itself; copies that spell the fields ``instruction`` / ``explain``
are read too). ``ori_img`` is a list for multi-element composition (the scene and the elements to put into it) and
temporal prediction (the other frames): the first is the sample's ``source_image``, the rest its
``reference_images``, so a method that takes one image is not applicable to them. ``gt_img`` (viewpoint change,
temporal prediction) is the ground-truth target. Edited images are ``<category>/<id>.jpg``
(``metrics_common.py``). Sample ids are ``<category>-<id>``.

Dimensions and knowledge types follow the official summary (BAGEL's ``eval/gen/kris/summarize.py``, the grouping
KRIS-Bench reports); the survey task type of each category is in :data:`KRIS_CATEGORIES`.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from editlab.datasets.folder import LocalBenchmark, open_image, resize_square
from editlab.datasets.rows import json_entries
from editlab.types import Sample, TaskType

#: category -> (dimension, knowledge type, survey task type or None)
KRIS_CATEGORIES: dict[str, tuple[str, str, TaskType | None]] = {
    "count_change": ("Attribute Perception", "Factual", None),
    "color_change": ("Attribute Perception", "Factual", TaskType.COLOR_CHANGE),
    "size_adjustment": ("Attribute Perception", "Factual", TaskType.SIZE_CHANGE),
    "part_completion": ("Attribute Perception", "Factual", None),
    "anomaly_correction": ("Attribute Perception", "Factual", None),
    "viewpoint_change": ("Spatial Perception", "Factual", TaskType.VIEWPOINT),
    "position_movement": ("Spatial Perception", "Factual", TaskType.OBJECT_MOVEMENT),
    "temporal_prediction": ("Temporal Prediction", "Factual", None),
    "humanities": ("Social Science", "Conceptual", None),
    "practical_knowledge": ("Social Science", "Conceptual", None),
    "biology": ("Natural Science", "Conceptual", None),
    "chemistry": ("Natural Science", "Conceptual", None),
    "geography": ("Natural Science", "Conceptual", None),
    "medicine": ("Natural Science", "Conceptual", None),
    "mathematics": ("Natural Science", "Conceptual", None),
    "physics": ("Natural Science", "Conceptual", None),
    "abstract_reasoning": ("Logical Reasoning", "Procedural", None),
    "rule-based_reasoning": ("Logical Reasoning", "Procedural", None),
    "multi-element_composition": ("Instruction Decomposition", "Procedural", None),
    "multi-instruction_execution": ("Instruction Decomposition", "Procedural", None),
}


def _field(entry: dict[str, Any], *names: str) -> Any:
    return next((entry[n] for n in names if entry.get(n) not in (None, "")), None)


class KRISBenchDataset(LocalBenchmark):
    """KRIS-Bench from its category folders; ``categories`` keeps a subset (KRIS-Bench's own names)."""

    name = "kris"
    label = "KRIS-Bench"
    single_split = "test"

    def __init__(
        self,
        root: str,
        split: str = "test",
        task_types: Iterable[str | TaskType] | None = None,
        limit: int | None = None,
        on_error: str = "raise",
        categories: Iterable[str] | None = None,
        size: int | None = None,
    ) -> None:
        super().__init__(root, split, task_types, limit, on_error)
        self.bench_dir = kris_folder(self.root)
        self.size = size
        wanted = list(categories) if categories is not None else list(KRIS_CATEGORIES)
        unknown = [c for c in wanted if c not in KRIS_CATEGORIES]
        if unknown:
            raise ValueError(f"unknown KRIS-Bench categories {unknown}, available: {', '.join(KRIS_CATEGORIES)}")
        present = [c for c in wanted if (self.bench_dir / c / "annotation.json").is_file()]
        if not present:
            raise self.not_found(f"KRIS-Bench not found: no <category>/annotation.json under {self.bench_dir}")
        self.missing_categories = [c for c in wanted if c not in present]
        for category in present:
            self._read(category)

    def _read(self, category: str) -> None:
        path = self.bench_dir / category / "annotation.json"
        _, rows = json_entries(path)
        dimension, knowledge, task = KRIS_CATEGORIES[category]
        for row in rows:
            key = row.key if row.key is not None else f"entry{row.number}"
            sid = f"{category}-{key}"
            where = f"{path}, entry {row.number} ('{key}')"
            entry = row.value if isinstance(row.value, dict) else {}
            inputs = entry.get("ori_img")
            inputs = [inputs] if isinstance(inputs, str) else list(inputs or [])
            record = {"task": task, "category": category, "key": key, "dimension": dimension, "knowledge": knowledge,
                      "inputs": inputs, "gt": entry.get("gt_img") or None,
                      "instruction": _field(entry, "ins_en", "instruction"),
                      "explain": _field(entry, "explain_en", "explain")}
            self.entries[sid] = record
            if row.problem:
                self.issues.add(sid, where, row.problem)
            elif not isinstance(row.value, dict):
                self.issues.add(sid, where, f"expected an object, got {type(row.value).__name__}")
            elif not inputs or not record["instruction"]:
                missing = [n for n, v in (("ori_img", inputs), ("ins_en", record["instruction"])) if not v]
                self.issues.add(sid, where, f"missing field(s) {', '.join(missing)}")
            else:
                files = inputs + ([record["gt"]] if record["gt"] else [])
                lost = next((f for f in files if not (path.parent / str(f)).is_file()), None)
                if lost is not None:
                    self.issues.add(sid, where, f"image file not found: {path.parent / str(lost)}")

    def _index(self) -> list[tuple[str, TaskType | None]]:
        return [(sid, e["task"]) for sid, e in self.entries.items()]

    def load(self, sample_id: str) -> Sample:
        e = self.entry(sample_id)
        folder = self.bench_dir / e["category"]
        where = f"{e['category']}/annotation.json entry '{e['key']}'"

        def image(name: str) -> Any:
            return resize_square(open_image(folder / str(name), "image", where).convert("RGB"), self.size)

        inputs = [image(n) for n in e["inputs"]]
        meta = {k: e[k] for k in ("category", "dimension", "knowledge", "explain")}
        meta |= {"id": e["key"], "inputs": [str(n) for n in e["inputs"]], "gt_img": e["gt"]}
        return Sample(
            id=sample_id,
            source_image=inputs[0],
            reference_images=inputs[1:] or None,
            instruction=str(e["instruction"]),
            target_image=image(e["gt"]) if e["gt"] else None,
            task_type=e["task"],
            meta={"kris": meta,  # judge/kris reads the category and the explanation
                  "judge_fields": {"kris_category": e["category"], "explain": e["explain"] or ""}},
        )


def kris_folder(root: Path) -> Path:
    """The ``KRIS_Bench`` folder under (or at) ``root``."""
    return root / "KRIS_Bench" if (root / "KRIS_Bench").is_dir() else root
