"""A folder of your own images plus a samples file: the format for pilot evaluations.

``samples`` is a JSONL or CSV file inside ``root`` with one row per edit. Columns (all but ``image``
optional): ``id``, ``image``, ``source_prompt``, ``target_prompt``, ``instruction``, ``mask``, ``reference``,
``target`` (a ground-truth edited image), ``task_type`` (one of :class:`editlab.types.TaskType`), ``points``
(JSON list of [x, y] pairs). Paths are relative to ``root``. Nothing is decoded until a sample is loaded.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from editlab.datasets.base import EditDataset
from editlab.types import Sample, SampleError, TaskType


def _open_image(path: Path, what: str) -> Image.Image:
    if not path.exists():
        raise SampleError(f"{what} file not found: {path}")
    try:
        image = Image.open(path)
        image.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise SampleError(f"{what} file is not a readable image: {path} ({type(err).__name__}: {err})") from err
    return image


class FolderDataset(EditDataset):
    name = "folder"

    def __init__(self, root: str, samples: str = "samples.jsonl", split: str = "test",
                 task_types: list[str] | None = None, limit: int | None = None) -> None:
        super().__init__(split=split, task_types=task_types, limit=limit)
        self.root = Path(root)
        self.samples_path = self.root / samples
        if not self.samples_path.exists():
            raise FileNotFoundError(f"samples file not found: {self.samples_path}")
        self.rows = self._read_rows()

    def _read_rows(self) -> dict[str, dict[str, Any]]:
        rows: dict[str, dict[str, Any]] = {}
        if self.samples_path.suffix == ".csv":
            with self.samples_path.open(newline="", encoding="utf-8") as f:
                raw = [(i + 2, r) for i, r in enumerate(csv.DictReader(f))]
        else:
            raw = []
            for i, line in enumerate(self.samples_path.read_text(encoding="utf-8").splitlines(), start=1):
                if not line.strip():
                    continue
                try:
                    raw.append((i, json.loads(line)))
                except json.JSONDecodeError as err:
                    raise ValueError(f"{self.samples_path}, line {i}: invalid JSON ({err})") from err
        for line_no, row in raw:
            if not row.get("image"):
                raise ValueError(f"{self.samples_path}, row {line_no}: missing 'image'")
            sid = str(row.get("id") or Path(row["image"]).stem)
            if sid in rows:
                raise ValueError(f"{self.samples_path}, row {line_no}: duplicate sample id '{sid}'")
            task = row.get("task_type") or None
            if task is not None:
                try:
                    row["task_type"] = TaskType(task)
                except ValueError as err:
                    valid = ", ".join(t.value for t in TaskType)
                    raise ValueError(f"{self.samples_path}, row {line_no}: unknown task_type '{task}', "
                                     f"available: {valid}") from err
            rows[sid] = row
        return rows

    def _index(self) -> list[tuple[str, TaskType | None]]:
        return [(sid, row.get("task_type")) for sid, row in self.rows.items()]

    def load(self, sample_id: str) -> Sample:
        if sample_id not in self.rows:
            raise SampleError(f"unknown sample id '{sample_id}'")
        row = self.rows[sample_id]

        def opt_image(key: str) -> Image.Image | None:
            return _open_image(self.root / row[key], key) if row.get(key) else None

        def opt_text(key: str) -> str | None:
            value = row.get(key)
            return None if value is None else str(value)

        points = row.get("points")
        if isinstance(points, str) and points:
            points = json.loads(points)
        return Sample(
            id=sample_id,
            source_image=_open_image(self.root / row["image"], "image"),
            source_prompt=opt_text("source_prompt"),
            target_prompt=opt_text("target_prompt"),
            instruction=opt_text("instruction"),
            mask=opt_image("mask"),
            reference_image=opt_image("reference"),
            target_image=opt_image("target"),
            points=[tuple(p) for p in points] if points else None,
            task_type=row.get("task_type"),
            meta={"row": {k: v for k, v in row.items() if isinstance(v, str | int | float)}},
        )
