"""ImgEdit-Bench (Ye et al., 2025): the Basic suite (737 instructions, 9 edit types) and the Understanding-Grounding-
Editing (UGE) suite (47 harder instructions).

Published format (PKU-YuanGroup/ImgEdit ``Benchmark/Basic/basic_edit.json``, ``Benchmark/UGE/UGE_edit.json``, and
the images of ``Benchmark.tar`` on the Hugging Face dataset ``sysuyy/ImgEdit``): a JSON object
``{key: {"id": <image path relative to the image folder>, "prompt": <instruction>, "edit_type": <type>}}``
(UGE entries have no ``edit_type``). Edited images are named ``<key>.png``.

Local layout (what ``editlab data prepare imgedit`` writes; other copies are found as listed)::

    <root>/basic_edit.json              also read: Basic/basic_edit.json, Benchmark/singleturn/singleturn.json
    <root>/Benchmark/singleturn/<category>/<file>.jpg     also: singleturn/, Benchmark/Basic/, Basic/
    <root>/UGE_edit.json                also read: UGE/UGE_edit.json, Benchmark/UGE/UGE_edit.json
    <root>/Benchmark/hard/<file>.jpg    also: hard/, Benchmark/UGE/, UGE/

Sample ids are the benchmark's keys (so ``<key>.png`` output folders import with the ``outputs`` method);
``meta["imgedit"]`` keeps ``key``, ``image`` (the ``id`` path), ``edit_type`` and ``suite``.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from editlab.datasets.folder import DatasetFormatError, LocalBenchmark, open_image, resize_square
from editlab.datasets.rows import json_entries
from editlab.types import Sample, TaskType

SUITES = ("basic", "uge")
_INDEX = {
    "basic": ("basic_edit.json", "Basic/basic_edit.json", "Benchmark/Basic/basic_edit.json",
              "Benchmark/singleturn/singleturn.json", "singleturn/singleturn.json"),
    "uge": ("UGE_edit.json", "UGE/UGE_edit.json", "Benchmark/UGE/UGE_edit.json"),
}
_IMAGES = {
    "basic": ("Benchmark/singleturn", "singleturn", "Benchmark/Basic", "Basic"),
    "uge": ("Benchmark/hard", "hard", "Benchmark/UGE", "UGE", "uge_original_images"),
}

#: ImgEdit Basic edit type -> survey task type; None where the survey has no single counterpart
IMGEDIT_TYPES: dict[str, TaskType | None] = {
    "add": TaskType.OBJECT_ADDITION,
    "remove": TaskType.OBJECT_REMOVAL,
    "replace": TaskType.OBJECT_REPLACEMENT,
    "adjust": None,  # attribute alteration: colour, material, shape ... of an object
    "style": TaskType.STYLE_CHANGE,
    "background": TaskType.BACKGROUND_CHANGE,
    "extract": None,  # cut one object out onto a plain background
    "action": TaskType.POSE_ACTION,
    "compose": None,  # several operations in one instruction
}


class ImgEditDataset(LocalBenchmark):
    """ImgEdit-Bench Basic (``suite=basic``) or UGE (``suite=uge``) from a local folder."""

    name = "imgedit"
    label = "ImgEdit-Bench"
    single_split = "test"

    def __init__(
        self,
        root: str,
        split: str = "test",
        task_types: Iterable[str | TaskType] | None = None,
        limit: int | None = None,
        on_error: str = "raise",
        suite: str = "basic",
        index: str | None = None,
        images: str | None = None,
        size: int | None = None,
    ) -> None:
        if suite not in SUITES:
            raise ValueError(f"unknown ImgEdit suite {suite!r}; valid: {', '.join(SUITES)}")
        super().__init__(root, split, task_types, limit, on_error)
        self.suite, self.size = suite, size
        self.name = "imgedit" if suite == "basic" else "imgedit_uge"  # the dataset config and prepare name
        self.index_path = self.root / index if index else self._first(_INDEX[suite], Path.is_file)
        self.images_dir = self.root / images if images else self._first(_IMAGES[suite], Path.is_dir)
        self._read()

    def _first(self, candidates: tuple[str, ...], test: object) -> Path:
        found = next((self.root / c for c in candidates if test(self.root / c)), None)  # type: ignore[operator]
        return found if found is not None else self.root / candidates[0]

    def _read(self) -> None:
        self.require_file(self.index_path, f"{self.suite} index", "ImgEdit's Benchmark folder and edit json files")
        kind, rows = json_entries(self.index_path)
        if kind is not dict:
            raise DatasetFormatError(f"{self.index_path}: expected an object of key -> {{id, prompt, edit_type}}")
        for row in rows:
            sid = row.key if row.key is not None else f"entry{row.number}"
            where = f"{self.index_path}, entry {row.number} ('{sid}')"
            entry = row.value if isinstance(row.value, dict) else {}
            edit_type = entry.get("edit_type")
            task = IMGEDIT_TYPES.get(str(edit_type)) if self.suite == "basic" else None
            self.entries[sid] = {"task": task, "entry": entry, "position": row.number}
            need = ("id", "prompt", "edit_type") if self.suite == "basic" else ("id", "prompt")
            missing = [k for k in need if not entry.get(k)]
            if row.problem:
                self.issues.add(sid, where, row.problem)
            elif not isinstance(row.value, dict):
                self.issues.add(sid, where, f"expected an object, got {type(row.value).__name__}")
            elif missing:
                self.issues.add(sid, where, f"missing field(s) {', '.join(missing)}")
            elif self.suite == "basic" and edit_type not in IMGEDIT_TYPES:
                self.issues.add(sid, where, f"unknown edit_type {edit_type!r}; ImgEdit Basic defines "
                                            f"{', '.join(IMGEDIT_TYPES)}")
            elif not (self.images_dir / str(entry["id"])).is_file():
                self.issues.add(sid, where, f"image file not found: {self.images_dir / str(entry['id'])}")

    def _index(self) -> list[tuple[str, TaskType | None]]:
        return [(sid, e["task"]) for sid, e in self.entries.items()]

    def source_key(self, sample_id: str) -> str:
        return str(self.entries.get(sample_id, {}).get("entry", {}).get("id") or sample_id)

    def load(self, sample_id: str) -> Sample:
        e = self.entry(sample_id)
        entry = e["entry"]
        image = open_image(self.images_dir / str(entry["id"]), "image", f"{self.index_path.name} entry '{sample_id}'")
        return Sample(
            id=sample_id,
            source_image=resize_square(image.convert("RGB"), self.size),
            instruction=str(entry["prompt"]),
            task_type=e["task"],
            meta={"imgedit": {"key": sample_id, "image": str(entry["id"]), "edit_type": entry.get("edit_type"),
                              "suite": self.suite},
                  "judge_fields": {"imgedit_edit_type": entry.get("edit_type")}},  # read by judge/imgedit
        )
