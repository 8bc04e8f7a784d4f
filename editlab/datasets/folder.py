"""A folder of your own images plus a samples file: the format for pilot evaluations.

``samples`` is a JSONL or CSV file inside ``root`` with one row per edit. Columns (all but ``image``
optional): ``id``, ``image``, ``source_prompt``, ``target_prompt``, ``instruction``, ``mask``, ``reference``,
``target`` (a ground-truth edited image), ``task_type`` (one of :class:`editlab.types.TaskType`), ``points``
(JSON list of [x, y] pairs). Paths are relative to ``root``. Nothing is decoded until a sample is loaded.

A CSV example (``samples.csv``; leave a cell empty for "absent")::

    id,image,source_prompt,target_prompt,instruction,mask,task_type
    shoe-01,shoe.jpg,a red shoe,a blue shoe,make the shoe blue,shoe_mask.png,color_change
    shoe-02,shoe.jpg,a red shoe,a red boot,,,object_replacement

Row problems (a missing ``image`` column, a file that does not exist, an unknown ``task_type``, invalid JSON,
bytes that are not valid UTF-8, a duplicate id) name the samples file and row (and, for undecodable bytes, the
byte offset). With ``on_error="raise"`` (default) they fail construction;
with ``on_error="skip"`` the row stays in the index and its ``load`` raises :class:`SampleError` with that
message, so the runner records it as an error for that sample and goes on.

This module also holds what the benchmark loaders share: :class:`LocalBenchmark` (their base class) and the
helpers for row problems, image opening and size checks.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from editlab.datasets.base import EditDataset
from editlab.datasets.rows import DatasetFormatError, csv_dict_rows, has_bad_text, jsonl_rows, read_json_file
from editlab.types import Sample, SampleError, TaskType

__all__ = ["DatasetFormatError", "read_json_file", "RowIssues", "LocalBenchmark", "FolderDataset", "open_image"]

ON_ERROR = ("raise", "skip")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".JPG", ".JPEG", ".PNG")


def check_on_error(on_error: str) -> str:
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {', '.join(ON_ERROR)}, got {on_error!r}")
    return on_error


class RowIssues:
    """Row-level problems found while indexing: raised at once (``raise``) or kept per sample (``skip``)."""

    def __init__(self, on_error: str) -> None:
        self.on_error = check_on_error(on_error)
        self.by_id: dict[str, str] = {}

    def add(self, sample_id: str, where: str, message: str) -> None:
        """Record ``message`` about the row at ``where`` (a file and row), belonging to ``sample_id``."""
        text = f"{where}: {message}"
        if self.on_error == "raise":
            raise DatasetFormatError(text)
        self.by_id.setdefault(sample_id, text)

    def check(self, sample_id: str) -> None:
        """Raise the recorded problem of ``sample_id``, if any, as a :class:`SampleError`."""
        if sample_id in self.by_id:
            raise SampleError(self.by_id[sample_id])

    def __contains__(self, sample_id: str) -> bool:
        return sample_id in self.by_id


def open_image(path: Path, what: str, where: str = "") -> Image.Image:
    """Open and decode ``path``; a missing or unreadable file raises a :class:`SampleError` naming it."""
    suffix = f" ({where})" if where else ""
    if not path.exists():
        raise SampleError(f"{what} file not found: {path}{suffix}")
    try:
        image = Image.open(path)
        image.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise SampleError(
            f"{what} file is not a readable image: {path} ({type(err).__name__}: {err}){suffix}"
        ) from err
    return image


def check_same_size(mask: Image.Image, image: Image.Image, mask_name: str, image_name: str, where: str) -> None:
    """A :class:`SampleError` naming both files when ``mask`` and ``image`` differ in size."""
    if mask.size != image.size:
        raise SampleError(
            f"mask size {mask.size} differs from image size {image.size}: mask {mask_name} vs image {image_name}"
            f" ({where})"
        )


def resize_square(image: Image.Image | None, size: int | None, mask: bool = False) -> Image.Image | None:
    """``image`` resized to ``size`` x ``size`` (nearest neighbour for masks); unchanged when ``size`` is None."""
    if image is None or size is None or image.size == (size, size):
        return image
    return image.resize((size, size), Image.NEAREST if mask else Image.BICUBIC)


def find_image(folder: Path, stem: str) -> Path | None:
    """The image file named ``stem`` with any common image suffix in ``folder``, if there is one."""
    for suffix in IMAGE_SUFFIXES:
        path = folder / f"{stem}{suffix}"
        if path.is_file():
            return path
    return None


class LocalBenchmark(EditDataset):
    """A published benchmark read from a local folder: ``root``, row problems (``issues``) and the ``entries`` index.

    Subclasses set ``name``, ``label`` (the benchmark's name in messages) and, where the benchmark has one split
    only, ``single_split``; they fill ``entries`` (sample id -> what ``load`` needs) while indexing.
    """

    label = "benchmark"
    single_split: str | None = None

    def __init__(
        self,
        root: str,
        split: str = "test",
        task_types: Iterable[str | TaskType] | None = None,
        limit: int | None = None,
        on_error: str = "raise",
    ) -> None:
        if self.single_split is not None and split != self.single_split:
            raise ValueError(f"{self.label} has a single split '{self.single_split}', got {split!r}")
        super().__init__(split=split, task_types=task_types, limit=limit)
        self.root = Path(root)
        self.issues = RowIssues(on_error)
        self.entries: dict[str, Any] = {}

    def not_found(self, message: str) -> FileNotFoundError:
        """A :class:`FileNotFoundError` with ``message`` and a pointer to ``editlab data prepare <name>``."""
        return FileNotFoundError(f"{message} (see `editlab data prepare {self.name}`)")

    def require_file(self, path: Path, what: str, layout: str) -> None:
        """Raise :meth:`not_found` naming ``path`` and where to place ``layout`` unless ``path`` is a file."""
        if not path.is_file():
            raise self.not_found(f"{self.label} {what} not found: {path}; place {layout} at {self.root}")

    def entry(self, sample_id: str) -> Any:
        """The index entry of ``sample_id``; an unknown id or a recorded row problem raises :class:`SampleError`."""
        if sample_id not in self.entries:
            raise SampleError(f"unknown {self.label} id '{sample_id}'")
        self.issues.check(sample_id)
        return self.entries[sample_id]


class FolderDataset(EditDataset):
    """Your own images plus a JSONL or CSV samples file (see the module docstring)."""

    name = "folder"

    def __init__(self, root: str, samples: str = "samples.jsonl", split: str = "test",
                 task_types: list[str] | None = None, limit: int | None = None, on_error: str = "raise") -> None:
        super().__init__(split=split, task_types=task_types, limit=limit)
        self.root = Path(root)
        self.samples_path = self.root / samples
        self.issues = RowIssues(on_error)
        if not self.samples_path.exists():
            raise FileNotFoundError(f"samples file not found: {self.samples_path}")
        self.rows = self._read_rows()

    def _raw_rows(self) -> list[tuple[int, dict[str, Any] | None, str | None]]:
        """(row number, row or None, problem or None) in file order; CSV rows count the header as row 1. A row
        with a problem keeps its parsed fields when they could be read, so that its id names the error."""
        if self.samples_path.suffix.lower() == ".csv":
            _, rows = csv_dict_rows(self.samples_path)
        else:
            rows = jsonl_rows(self.samples_path)
        raw: list[tuple[int, dict[str, Any] | None, str | None]] = []
        for row in rows:
            if row.value is not None and not isinstance(row.value, dict):
                raw.append((row.number, None, row.problem or f"expected a JSON object, got {type(row.value).__name__}"))
            else:
                raw.append((row.number, row.value, row.problem))
        return raw

    def _read_rows(self) -> dict[str, dict[str, Any]]:
        rows: dict[str, dict[str, Any]] = {}
        name = self.samples_path.name
        for line_no, row, problem in self._raw_rows():
            where = f"{self.samples_path}, row {line_no}"
            if row is None:
                sid = f"{name}-row{line_no}"
                rows[sid] = {"_row": line_no}
                self.issues.add(sid, where, problem or "unreadable row")
                continue
            sid = str(row.get("id") or (Path(str(row["image"])).stem if row.get("image") else f"{name}-row{line_no}"))
            if has_bad_text(sid):  # the id itself is undecodable: the row is named by its number
                sid = f"{name}-row{line_no}"
            if sid in rows:
                dup = f"{sid}-row{line_no}"
                rows[dup] = {"_row": line_no}
                self.issues.add(dup, where, f"duplicate sample id '{sid}'")
                continue
            row["_row"] = line_no
            rows[sid] = row
            if problem:
                self.issues.add(sid, where, problem)
                continue
            if not row.get("image"):
                self.issues.add(sid, where, "missing 'image'")
                continue
            task = row.get("task_type") or None
            if task is not None:
                try:
                    row["task_type"] = TaskType(task)
                except ValueError:
                    row["task_type"] = None
                    valid = ", ".join(t.value for t in TaskType)
                    self.issues.add(sid, where, f"unknown task_type '{task}', available: {valid}")
            for key in ("image", "mask", "reference", "target"):
                if row.get(key) and not (self.root / str(row[key])).exists():
                    self.issues.add(sid, where, f"{key} file not found: {self.root / str(row[key])}")
                    break
            points = row.get("points")
            if isinstance(points, str) and points:
                try:
                    row["points"] = json.loads(points)
                except json.JSONDecodeError as err:
                    self.issues.add(sid, where, f"'points' is not a JSON list of [x, y] pairs ({err})")
        return rows

    def _index(self) -> list[tuple[str, TaskType | None]]:
        return [(sid, row.get("task_type")) for sid, row in self.rows.items()]

    def source_key(self, sample_id: str) -> str:
        row = self.rows.get(sample_id, {})
        return str(row.get("image") or sample_id)

    def load(self, sample_id: str) -> Sample:
        if sample_id not in self.rows:
            raise SampleError(f"unknown sample id '{sample_id}'")
        self.issues.check(sample_id)
        row = self.rows[sample_id]
        where = f"{self.samples_path.name} row {row['_row']}"

        def opt_image(key: str) -> Image.Image | None:
            return open_image(self.root / str(row[key]), key, where) if row.get(key) else None

        def opt_text(key: str) -> str | None:
            value = row.get(key)
            return None if value is None else str(value)

        image = open_image(self.root / str(row["image"]), "image", where)
        mask = opt_image("mask")
        if mask is not None:
            check_same_size(mask, image, str(row["mask"]), str(row["image"]), where)
        points = row.get("points")
        return Sample(
            id=sample_id,
            source_image=image,
            source_prompt=opt_text("source_prompt"),
            target_prompt=opt_text("target_prompt"),
            instruction=opt_text("instruction"),
            mask=mask,
            reference_image=opt_image("reference"),
            target_image=opt_image("target"),
            points=[tuple(p) for p in points] if points else None,
            task_type=row.get("task_type"),
            meta={"row": {k: v for k, v in row.items() if isinstance(v, str | int | float) and k != "_row"}},
        )
