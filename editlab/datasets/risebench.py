"""RISEBench (Zhao et al., 2025): reasoning-informed visual editing in 4 categories (temporal, causal, spatial,
logical) with their sub-tasks.

Published format (github.com/PhoenixZ810/RISEBench ``data/data_total.json`` for RISEBench-64, and
``datav2_total_w_subtask.json`` with ``data.zip`` of the Hugging Face dataset ``PhoenixZ/RISEBench`` for the full
RISEBench-360): a JSON list of ``{"index", "category", "instruction", "image", "reference" | "reference_img" |
"reference_txt", "subtask"?, ...}``; ``image`` and ``reference_img`` are paths relative to the list's folder
(``gpt_eval.py --input data``). Edited images are ``images/<category>/<index>.png|jpg|jpeg``.

``split=test`` is RISEBench-360 (``datav2_total_w_subtask.json``), ``split=mini`` RISEBench-64
(``data_total.json``); both are looked for in ``root`` and ``root/data``. A ``reference_img`` (spatial and logical
puzzles with a drawn answer) is the sample's ground-truth target; the textual references and every other field
of the entry are kept in ``meta["rise"]``. Sample ids are the entries' ``index``. RISEBench's categories have no
survey task type (they are kinds of reasoning, not kinds of edit).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from editlab.datasets.folder import DatasetFormatError, LocalBenchmark, open_image, resize_square
from editlab.datasets.rows import has_bad_text, json_entries
from editlab.types import Sample, TaskType

RISE_INDEX = {"test": "datav2_total_w_subtask.json", "mini": "data_total.json"}
RISE_CATEGORIES = ("temporal_reasoning", "causal_reasoning", "spatial_reasoning", "logical_reasoning")
_REQUIRED = ("index", "category", "instruction", "image")


class RISEBenchDataset(LocalBenchmark):
    """RISEBench-360 (``split=test``) or RISEBench-64 (``split=mini``) from a local folder."""

    name = "rise"
    label = "RISEBench"

    def __init__(
        self,
        root: str,
        split: str = "test",
        task_types: Iterable[str | TaskType] | None = None,
        limit: int | None = None,
        on_error: str = "raise",
        index: str | None = None,
        size: int | None = None,
    ) -> None:
        if split not in RISE_INDEX:
            raise ValueError(f"unknown RISEBench split {split!r}; valid: test (RISEBench-360), mini (RISEBench-64)")
        super().__init__(root, split, task_types, limit, on_error)
        name = index or RISE_INDEX[split]
        self.index_path = next((p for p in (self.root / name, self.root / "data" / name) if p.is_file()),
                               self.root / name)
        self.size = size
        self._read()

    def _read(self) -> None:
        self.require_file(self.index_path, "index", f"RISEBench's {RISE_INDEX[self.split]} and its image folders")
        kind, rows = json_entries(self.index_path)
        if kind is not list:
            raise DatasetFormatError(f"{self.index_path}: expected a list of entries")
        base = self.index_path.parent
        for row in rows:
            entry = row.value if isinstance(row.value, dict) else {}
            index = entry.get("index")
            readable = isinstance(index, str) and index and not has_bad_text(index)
            sid = index if readable else f"entry{row.number}"
            where = f"{self.index_path}, entry {row.number}"
            if sid in self.entries:
                sid = f"{sid}-entry{row.number}"
                self.entries[sid] = {"entry": {}}
                self.issues.add(sid, where, "duplicate index")
                continue
            self.entries[sid] = {"entry": entry}
            missing = [k for k in _REQUIRED if not entry.get(k)]
            if row.problem:
                self.issues.add(sid, where, row.problem)
            elif not isinstance(row.value, dict):
                self.issues.add(sid, where, f"expected an object, got {type(row.value).__name__}")
            elif missing:
                self.issues.add(sid, where, f"missing field(s) {', '.join(missing)}")
            elif entry["category"] not in RISE_CATEGORIES:
                self.issues.add(sid, where, f"unknown category {entry['category']!r}; RISEBench defines "
                                            f"{', '.join(RISE_CATEGORIES)}")
            else:
                files = [entry["image"]] + ([entry["reference_img"]] if _text(entry.get("reference_img")) else [])
                lost = next((f for f in files if self._image_path(base, f) is None), None)
                if lost is not None:
                    self.issues.add(sid, where, f"image file not found: {base / str(lost)}")

    @staticmethod
    def _image_path(base: Path, rel: Any) -> Path | None:
        return next((p for p in (base / str(rel), base / "data" / str(rel)) if p.is_file()), None)

    def _index(self) -> list[tuple[str, TaskType | None]]:
        return [(sid, None) for sid in self.entries]

    def load(self, sample_id: str) -> Sample:
        entry = self.entry(sample_id)["entry"]
        base, where = self.index_path.parent, f"{self.index_path.name} entry '{sample_id}'"

        def image(rel: Any) -> Any:
            path = self._image_path(base, rel) or base / str(rel)
            return resize_square(open_image(path, "image", where).convert("RGB"), self.size)

        reference = entry.get("reference_img")
        meta = {k: v for k, v in entry.items() if isinstance(v, str | int | float | bool) or v is None}
        return Sample(
            id=sample_id,
            source_image=image(entry["image"]),
            instruction=str(entry["instruction"]),
            target_image=image(reference) if _text(reference) else None,
            task_type=None,
            meta={"rise": meta,  # judge/rise reads the category and the entry's judging flags
                  "judge_fields": {"rise_category": meta.get("category")} | {
                      k: meta[k] for k in ("consistency_free", "reasoning_img", "reference", "reference_txt",
                                           "reference_img") if meta.get(k) is not None}},
        )


def _text(value: Any) -> bool:
    """A non-empty string (RISEBench's pandas-read fields may hold NaN for 'absent')."""
    return isinstance(value, str) and bool(value.strip())
