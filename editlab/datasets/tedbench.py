"""TEdBench (Kawar et al., 2023, "Imagic"): 100 (image, target text) pairs for complex non-rigid edits.

Layout (the ``tedbench`` folder of the Imagic project page repository)::

    <root>/input_list.json     [{"img_name": "dog2_standing.png", "target_text": "A photo of a sitting dog."}, ...]
    <root>/originals/<img_name>

TEdBench gives only the target text: samples have a ``target_prompt`` and no source prompt, mask or ground
truth, and no task type (its edits mix pose, object, style and scene changes). Ids are
``<position>_<image stem>`` (``007_zebra``); several pairs share one image, which :meth:`source_key` reports.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from editlab.datasets.folder import DatasetFormatError, LocalBenchmark, open_image, resize_square
from editlab.datasets.rows import has_bad_text, json_entries
from editlab.types import Sample, TaskType


class TEdBenchDataset(LocalBenchmark):
    """TEdBench from ``input_list.json`` and ``originals/``."""

    name = "tedbench"
    label = "TEdBench"
    single_split = "test"

    def __init__(
        self,
        root: str,
        split: str = "test",
        task_types: Iterable[str | TaskType] | None = None,
        limit: int | None = None,
        on_error: str = "raise",
        input_list: str = "input_list.json",
        images: str = "originals",
        size: int | None = None,
    ) -> None:
        super().__init__(root, split, task_types, limit, on_error)
        self.list_path = self.root / input_list
        self.images_dir = self.root / images
        self.size = size
        self._read()

    def _read(self) -> None:
        self.require_file(self.list_path, "input list", "Imagic's tedbench folder (input_list.json + originals/)")
        kind, rows = json_entries(self.list_path)
        if kind is not list:
            raise DatasetFormatError(f"{self.list_path}: expected a list of {{img_name, target_text}} objects")
        for row in rows:
            position, pair = row.number, row.value
            where = f"{self.list_path}, entry {position}"
            name = pair.get("img_name") if isinstance(pair, dict) else None
            text = pair.get("target_text") if isinstance(pair, dict) else None
            readable = name and not has_bad_text(name)
            sid = f"{position:03d}_{Path(str(name)).stem}" if readable else f"{position:03d}"
            self.entries[sid] = {"position": position, "img_name": name, "target_text": text}
            if row.problem:
                self.issues.add(sid, where, row.problem)
            elif not isinstance(pair, dict):
                self.issues.add(sid, where, f"expected an object, got {type(pair).__name__}")
            elif not name or not text or not isinstance(text, str):
                missing = [k for k, v in (("img_name", name), ("target_text", text)) if not v]
                self.issues.add(sid, where, f"unreadable row: missing {', '.join(missing) or 'target_text text'}")
            elif not (self.images_dir / str(name)).is_file():
                self.issues.add(sid, where, f"image file not found: {self.images_dir / str(name)}")

    def _index(self) -> list[tuple[str, TaskType | None]]:
        return [(sid, None) for sid in self.entries]

    def source_key(self, sample_id: str) -> str:
        return str(self.entries.get(sample_id, {}).get("img_name") or sample_id)

    def load(self, sample_id: str) -> Sample:
        e = self.entry(sample_id)
        image = open_image(self.images_dir / str(e["img_name"]), "image", f"{self.list_path.name} entry "
                                                                         f"{e['position']}")
        return Sample(
            id=sample_id,
            source_image=resize_square(image.convert("RGB"), self.size),
            target_prompt=str(e["target_text"]),
            task_type=None,
            meta={"tedbench": {"img_name": e["img_name"], "position": e["position"]}},
        )
