"""MagicBrush (Zhang et al., 2023): manually annotated instruction edits, single- and multi-turn, with masks.

Two local layouts are read:

1. The released split folders (the test split is only distributed this way)::

       <root>/<split>/edit_sessions.json          {img_id: [{"input", "mask", "output", "instruction"}, ...]}
       <root>/<split>/images/<img_id>/<img_id>-input.png, -mask1.png, -output1.png, -mask2.png, ...
       <root>/<split>/global_descriptions.json    optional {img_id: {file name: caption}}
       <root>/<split>/local_descriptions.json     optional, same shape

   ``root`` may also be the split folder itself. Turn k's ``input`` is turn k-1's ground-truth ``output``.

2. A Hugging Face copy of ``osunlp/MagicBrush`` (splits ``train`` and ``dev``; columns ``img_id``,
   ``turn_index``, ``source_img``, ``mask_img``, ``instruction``, ``target_img``): parquet files
   (``<root>/data/<split>-*.parquet``, what ``editlab data prepare magicbrush`` downloads; reading them needs
   ``pyarrow``), a ``datasets.save_to_disk`` folder (needs ``datasets``), or a JSON-lines export
   ``<root>/<split>/metadata.jsonl`` whose image columns hold file paths relative to that folder.

Masks are the source image with the edit region erased (transparent), as DALL-E 2's inpainting takes them;
:func:`mask_from_image` turns them into editlab's binary masks.

``evaluation`` picks what is scored, ``iterative`` what each turn is edited from:

- ``iterative=False`` (default), ground-truth inputs: ``all_turn`` gives one sample per turn, edited from that
  turn's ground-truth input and compared with that turn's ground truth (ids ``<img_id>_t<turn>``);
  ``final_turn`` gives one sample per session, from the original image to the last ground-truth output (id
  ``<img_id>``), carrying the turn instructions in order in ``meta["magicbrush"]["turn_instructions"]`` and
  joined with "; " in ``instruction``; its mask is the union of the turn masks.
- ``iterative=True``, the paper's multi-turn setting: one sample per turn (ids ``<img_id>_t<turn>``, sessions
  in turn order), turn 1 edited from the original image and turn k from the method's *own* output of turn k-1
  (:meth:`MagicBrushDataset.chain_from`; the runner substitutes the cached edit, see
  :mod:`editlab.bench.runner`). Each turn keeps its own instruction, mask and ground truth. ``all_turn`` scores
  every turn against its ground truth; ``final_turn`` scores only the last turn of each session (the earlier
  turns are edited, recorded with ``"scored": false``, and left out of the metrics and counts). ``limit``
  counts turns.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from editlab.datasets.folder import (
    DatasetFormatError,
    LocalBenchmark,
    check_same_size,
    open_image,
    read_json_file,
    resize_square,
)
from editlab.datasets.rows import csv_dict_rows, has_bad_text, json_entries, jsonl_rows
from editlab.types import Sample, SampleError, TaskType

MAGICBRUSH_HUB = "osunlp/MagicBrush"
EVALUATIONS = ("all_turn", "final_turn")
IMAGE_COLUMNS = ("source_img", "mask_img", "target_img")


# --------------------------------------------------------------------------------------------------------
# Masks
# --------------------------------------------------------------------------------------------------------
def mask_from_image(mask: Image.Image, source: Image.Image | None = None, tolerance: int = 16) -> Image.Image:
    """editlab's binary "L" mask (255 = edit) from a MagicBrush / ImagenHub mask image.

    - with an alpha channel that has transparent pixels: edit where alpha < 128 (the region erased for
      inpainting; a soft alpha is thresholded at one half);
    - a strictly black-and-white image: edit where white;
    - otherwise (an erased region flattened to a colour): edit where the mask image differs from ``source`` by
      more than ``tolerance`` in any channel.
    """
    bands = mask.getbands()
    if "A" in bands or (mask.mode == "P" and "transparency" in mask.info):
        alpha = np.asarray(mask.convert("RGBA").getchannel("A"))
        if (alpha < 255).any():
            return Image.fromarray(((alpha < 128) * 255).astype(np.uint8))
    gray = np.asarray(mask.convert("L"))
    if np.isin(gray, (0, 255)).all():
        return Image.fromarray(((gray > 127) * 255).astype(np.uint8))
    if source is None:
        raise SampleError("mask is neither transparent where edited nor black-and-white, and no source image to "
                          "compare it with")
    diff = np.abs(np.asarray(mask.convert("RGB"), np.int16) - np.asarray(source.convert("RGB"), np.int16))
    return Image.fromarray(((diff.max(axis=2) > tolerance) * 255).astype(np.uint8))


# --------------------------------------------------------------------------------------------------------
# Hugging Face dataset copies on disk
# --------------------------------------------------------------------------------------------------------
class HFTable:
    """One split of a Hugging Face dataset on disk: text columns read at once, images decoded on demand."""

    kind = "table"

    def __init__(self, source: Path) -> None:
        self.source = source
        self.rows: list[dict[str, Any]] = []

    def image(self, index: int, column: str) -> Image.Image:
        raise NotImplementedError

    def describe(self, index: int, column: str) -> str:
        return f"{self.source} row {index} column '{column}'"

    def where(self, index: int) -> str:
        """The file and row of row ``index``, for messages."""
        return f"{self.source}, row {index}"


def _decode_cell(value: Any, base: Path | None, what: str) -> Image.Image:
    """A Hugging Face ``Image`` cell (dict with ``bytes``/``path``, raw bytes, a path or a PIL image)."""
    if isinstance(value, Image.Image):
        return value
    if isinstance(value, dict):
        if value.get("bytes"):
            value = value["bytes"]
        elif value.get("path"):
            value = value["path"]
        else:
            raise SampleError(f"{what} is empty")
    if isinstance(value, bytes | bytearray | memoryview):
        try:
            image = Image.open(io.BytesIO(bytes(value)))
            image.load()
        except OSError as err:
            raise SampleError(f"{what} is not a readable image ({type(err).__name__}: {err})") from err
        return image
    if isinstance(value, str) and value:
        path = Path(value)
        return open_image(path if path.is_absolute() or base is None else base / path, what)
    raise SampleError(f"{what} is missing")


class JsonlTable(HFTable):
    """``<split>/metadata.jsonl`` (or ``.csv``): one row per example, image columns are relative paths."""

    kind = "jsonl"

    def __init__(self, source: Path) -> None:
        super().__init__(source)
        rows = csv_dict_rows(source)[1] if source.suffix == ".csv" else jsonl_rows(source)
        for row in rows:
            value = row.value if isinstance(row.value, dict) else {}
            if row.problem or not isinstance(row.value, dict):
                problem = row.problem or f"expected a JSON object, got {type(row.value).__name__}"
                # the readable fields stay (they name the sample); the row itself is not used
                value = {k: v for k, v in value.items() if not has_bad_text(k) and not has_bad_text(v)}
                value["_problem"] = f"line {row.number}: {problem}"
            self.rows.append(value)

    def image(self, index: int, column: str) -> Image.Image:
        return _decode_cell(self.rows[index].get(column), self.source.parent, self.describe(index, column))

    def describe(self, index: int, column: str) -> str:
        return f"{self.source} line {index + 1} column '{column}'"


class ParquetTable(HFTable):
    """Hugging Face parquet shards of one split; needs ``pyarrow`` (or ``fastparquet``) for pandas."""

    kind = "parquet"

    def __init__(self, files: list[Path], image_columns: Iterable[str]) -> None:
        super().__init__(files[0].parent)
        self.files = files
        self.image_columns = set(image_columns)
        self._where: list[tuple[int, int]] = []  # row -> (file index, row in file)
        self._cache: tuple[int, str, list[Any]] | None = None
        for fi, path in enumerate(files):
            frame = _read_parquet(path)
            keep = [c for c in frame.columns if c not in self.image_columns]
            for ri, rec in enumerate(frame[keep].to_dict("records")):
                self.rows.append({k: (None if _isna(v) else v) for k, v in rec.items()})
                self._where.append((fi, ri))
            del frame

    def image(self, index: int, column: str) -> Image.Image:
        fi, ri = self._where[index]
        if self._cache is None or self._cache[:2] != (fi, column):
            frame = _read_parquet(self.files[fi], columns=[column])
            self._cache = (fi, column, list(frame[column]))
        return _decode_cell(self._cache[2][ri], self.files[fi].parent, self.describe(index, column))

    def describe(self, index: int, column: str) -> str:
        fi, ri = self._where[index]
        return f"{self.files[fi]} row {ri} column '{column}'"

    def where(self, index: int) -> str:
        fi, ri = self._where[index]
        return f"{self.files[fi]}, row {ri}"


class ArrowTable(HFTable):
    """A ``datasets.Dataset.save_to_disk`` folder; needs the optional ``datasets`` package."""

    kind = "arrow"

    def __init__(self, folder: Path, split: str, image_columns: Iterable[str]) -> None:
        super().__init__(folder)
        try:
            from datasets import DatasetDict, load_from_disk
        except ImportError as err:
            raise ImportError(f"{folder} is a `datasets.save_to_disk` folder; reading it needs the datasets "
                              f"package: pip install datasets") from err
        data = load_from_disk(str(folder / split if (folder / split / "state.json").is_file() else folder))
        if isinstance(data, DatasetDict):
            if split not in data:
                raise DatasetFormatError(f"{folder}: no split '{split}' (has {', '.join(data)})")
            data = data[split]
        self.data = data
        keep = [c for c in data.column_names if c not in set(image_columns)]
        self.rows = [dict(r) for r in data.select_columns(keep)]

    def image(self, index: int, column: str) -> Image.Image:
        return _decode_cell(self.data[index][column], self.source, self.describe(index, column))


class ArrowFileTable(HFTable):
    """Arrow stream files as the ``datasets`` library writes them (``<split>/data-00000-of-0000N.arrow``, what a hub
    repo in "arrow" format holds); read with pyarrow, no ``datasets`` package needed."""

    kind = "arrow-files"

    def __init__(self, files: list[Path], image_columns: Iterable[str]) -> None:
        super().__init__(files[0].parent)
        self.files = files
        self.image_columns = set(image_columns)
        self._where: list[tuple[int, int]] = []
        self._cache: tuple[int, str, list[Any]] | None = None
        for fi, path in enumerate(files):
            table = _read_arrow(path)
            keep = [c for c in table.column_names if c not in self.image_columns]
            for ri, rec in enumerate(table.select(keep).to_pylist()):
                self.rows.append({k: (None if _isna(v) else v) for k, v in rec.items()})
                self._where.append((fi, ri))

    def image(self, index: int, column: str) -> Image.Image:
        fi, ri = self._where[index]
        if self._cache is None or self._cache[:2] != (fi, column):
            table = _read_arrow(self.files[fi])
            if column not in table.column_names:
                raise SampleError(f"{self.files[fi]} has no column '{column}'")
            self._cache = (fi, column, table.column(column).to_pylist())
        return _decode_cell(self._cache[2][ri], self.files[fi].parent, self.describe(index, column))

    def describe(self, index: int, column: str) -> str:
        fi, ri = self._where[index]
        return f"{self.files[fi]} row {ri} column '{column}'"

    def where(self, index: int) -> str:
        fi, ri = self._where[index]
        return f"{self.files[fi]}, row {ri}"


def _read_arrow(path: Path) -> Any:
    try:
        import pyarrow as pa
    except ImportError as err:
        raise ImportError(f"reading {path} needs pyarrow: pip install pyarrow") from err
    try:
        with pa.memory_map(str(path)) as source:
            return pa.ipc.open_stream(source).read_all()
    except pa.ArrowInvalid:
        with pa.memory_map(str(path)) as source:
            return pa.ipc.open_file(source).read_all()


def arrow_files(root: Path, split: str) -> list[Path]:
    """``datasets``-written arrow shards of ``split`` (``<root>/<split>/*.arrow``, ``<root>/<split>-*.arrow``, ...)."""
    for pattern in (f"{split}/*.arrow", f"data/{split}/*.arrow", f"{split}-*.arrow", f"data/{split}-*.arrow",
                    f"*/{split}/*.arrow"):
        files = sorted(p for p in root.glob(pattern) if not p.name.startswith("cache-"))
        if files:
            return files
    return []


def _isna(value: Any) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


def _read_parquet(path: Path, columns: list[str] | None = None) -> Any:
    import pandas as pd

    try:
        return pd.read_parquet(path, columns=columns)
    except ImportError as err:
        raise ImportError(f"reading {path} needs a parquet engine for pandas: pip install pyarrow") from err


def parquet_files(root: Path, split: str) -> list[Path]:
    """Parquet shards of ``split`` in the layouts the Hugging Face hub and its exports use."""
    for pattern in (f"data/{split}-*.parquet", f"data/{split}/*.parquet", f"{split}/*.parquet",
                    f"{split}-*.parquet", f"{split}.parquet", f"data/{split}.parquet",
                    f"*/{split}/*.parquet"):  # the last: the hub's parquet conversion (default/<split>/0000.parquet)
        files = sorted(root.glob(pattern))
        if files:
            return files
    return []


def find_hf_table(root: Path, split: str, image_columns: Iterable[str] = IMAGE_COLUMNS) -> HFTable | None:
    """The local copy of one split of a Hugging Face dataset under ``root`` (or ``root`` being that split's
    folder), or None when there is none."""
    for folder in (root / split, root):
        for name in ("metadata.jsonl", "metadata.csv"):
            if (folder / name).is_file():
                return JsonlTable(folder / name)
    files = parquet_files(root, split)
    if files:
        return ParquetTable(files, image_columns)
    arrow = arrow_files(root, split)
    if arrow:
        return ArrowFileTable(arrow, image_columns)
    if any((root / name).is_file() for name in ("dataset_dict.json", "state.json", f"{split}/state.json")):
        return ArrowTable(root, split, image_columns)
    return None


# --------------------------------------------------------------------------------------------------------
# MagicBrush
# --------------------------------------------------------------------------------------------------------
@dataclass
class ImageRef:
    """Where one image lives: a file, or a cell of a Hugging Face table."""

    path: Path | None = None
    table: HFTable | None = None
    index: int = 0
    column: str = ""

    def open(self, what: str, where: str) -> Image.Image:
        if self.path is not None:
            return open_image(self.path, what, where)
        assert self.table is not None
        try:
            return self.table.image(self.index, self.column)
        except SampleError as err:
            raise SampleError(f"{what}: {err} ({where})") from err

    def describe(self) -> str:
        if self.path is not None:
            return self.path.name
        assert self.table is not None
        return self.table.describe(self.index, self.column)


@dataclass
class Turn:
    img_id: str
    turn: int
    instruction: str
    source: ImageRef
    target: ImageRef
    mask: ImageRef | None
    where: str
    source_caption: str | None = None
    target_caption: str | None = None
    local_caption: str | None = None


@dataclass
class _Entry:
    img_id: str
    turns: list[Turn] = field(default_factory=list)


class MagicBrushDataset(LocalBenchmark):
    """MagicBrush test/dev/train from a local folder (see the module docstring for layouts and settings)."""

    name = "magicbrush"
    label = "MagicBrush"
    entries: dict[str, _Entry]

    def __init__(
        self,
        root: str,
        split: str = "test",
        task_types: Iterable[str | TaskType] | None = None,
        limit: int | None = None,
        on_error: str = "raise",
        evaluation: str = "all_turn",
        use_mask: bool = True,
        size: int | None = None,
        download: bool = False,
        iterative: bool = False,
    ) -> None:
        if evaluation not in EVALUATIONS:
            raise ValueError(f"evaluation must be one of {', '.join(EVALUATIONS)}, got {evaluation!r}")
        super().__init__(root, split, task_types, limit, on_error)
        self.evaluation = evaluation
        self.iterative = iterative
        self.per_turn = iterative or evaluation == "all_turn"  # one sample per turn
        self.use_mask = use_mask
        self.size = size
        sessions = self._sessions_file()
        table = None if sessions else find_hf_table(self.root, split)
        if sessions is None and table is None and download:
            from editlab.datasets.prepare import fetch_hf_parquet

            fetch_hf_parquet(MAGICBRUSH_HUB, self.root, split)
            table = find_hf_table(self.root, split)
        if sessions is not None:
            self.source = sessions
            self._read_sessions(sessions)
        elif table is not None:
            self.source = table.source
            self._read_table(table)
        else:
            raise self.not_found(
                f"MagicBrush split '{split}' not found under {self.root}: expected {self.root / split}/"
                f"edit_sessions.json with images/ (the released zip), or Hugging Face parquet files "
                f"{self.root}/data/{split}-*.parquet"
            )
        self.session_turns: dict[str, list[int]] = {}  # img_id -> its turn numbers, ascending
        for e in self.entries.values():
            self.session_turns.setdefault(e.img_id, []).extend(t.turn for t in e.turns)
        for img_id, turns in self.session_turns.items():
            self.session_turns[img_id] = sorted(set(turns))

    # ---------------------------------------------------------------------------------------------- reading
    def _sessions_file(self) -> Path | None:
        for path in (self.root / self.split / "edit_sessions.json", self.root / "edit_sessions.json"):
            if path.is_file():
                return path
        return None

    def _add(self, turn: Turn, problem: str | None) -> None:
        sid = self._turn_id(turn.img_id, turn.turn) if self.per_turn else turn.img_id
        entry = self.entries.setdefault(sid, _Entry(turn.img_id))
        if any(t.turn == turn.turn for t in entry.turns):
            problem = problem or f"duplicate turn {turn.turn} of session '{turn.img_id}'"
            if self.per_turn:
                sid = f"{sid}-dup{sum(k.startswith(sid) for k in self.entries)}"
                entry = self.entries.setdefault(sid, _Entry(turn.img_id))
        entry.turns.append(turn)
        if problem:
            self.issues.add(sid, turn.where, problem)

    @staticmethod
    def _turn_id(img_id: str, turn: int) -> str:
        return f"{img_id}_t{turn}"

    def _read_sessions(self, path: Path) -> None:
        images = path.parent / "images"
        kind, session_rows = json_entries(path)
        if kind is not dict:
            raise DatasetFormatError(f"{path}: expected an object of img_id -> list of turns")
        captions = {}
        for name in ("global_descriptions.json", "local_descriptions.json"):
            file = path.parent / name
            if file.is_file():
                captions[name] = read_json_file(file)
        glob, local = captions.get("global_descriptions.json", {}), captions.get("local_descriptions.json", {})
        for row in session_rows:
            img_id, turns = (row.key if row.key is not None else f"entry{row.number}"), row.value
            if row.problem or not isinstance(turns, list) or not turns:
                sid = self._turn_id(img_id, 1) if self.per_turn else img_id
                self.entries.setdefault(sid, _Entry(img_id))
                self.issues.add(sid, f"{path}, session '{img_id}'", row.problem or "expected a non-empty list of turns")
                continue
            folder = images / img_id
            for k, t in enumerate(turns, start=1):
                where = f"{path}, session '{img_id}' turn {k}"
                ok = isinstance(t, dict)
                get = t.get if ok else (lambda _key: None)
                turn = Turn(
                    img_id=img_id, turn=k, instruction=str(get("instruction") or ""),
                    source=ImageRef(path=folder / str(get("input") or "")),
                    target=ImageRef(path=folder / str(get("output") or "")),
                    mask=ImageRef(path=folder / str(get("mask"))) if get("mask") else None, where=where,
                    source_caption=(glob.get(img_id) or {}).get(str(get("input"))),
                    target_caption=(glob.get(img_id) or {}).get(str(get("output"))),
                    local_caption=(local.get(img_id) or {}).get(str(get("output"))),
                )
                problem = None
                if not ok:
                    problem = f"expected an object with input/output/instruction, got {type(t).__name__}"
                else:
                    missing = [key for key in ("input", "output", "instruction") if not t.get(key)]
                    if missing:
                        problem = f"missing field(s) {', '.join(missing)}"
                    else:
                        refs = [("input", turn.source), ("output", turn.target)]
                        refs += [("mask", turn.mask)] if turn.mask and self.use_mask else []
                        lost = next((f"{what} file not found: {ref.path}" for what, ref in refs
                                     if ref.path is not None and not ref.path.is_file()), None)
                        problem = lost
                self._add(turn, problem)

    def _read_table(self, table: HFTable) -> None:
        for index, row in enumerate(table.rows):
            where = f"{table.source}, row {index}"
            img_id = str(row.get("img_id") if row.get("img_id") is not None else f"row{index}")
            try:
                turn_no = int(row.get("turn_index"))  # type: ignore[arg-type]
            except (TypeError, ValueError):
                turn_no = 1
                bad_turn = True
            else:
                bad_turn = False
            turn = Turn(
                img_id=img_id, turn=turn_no, instruction=str(row.get("instruction") or ""),
                source=ImageRef(table=table, index=index, column="source_img"),
                target=ImageRef(table=table, index=index, column="target_img"),
                mask=ImageRef(table=table, index=index, column="mask_img"), where=where,
                source_caption=row.get("source_global_caption"), target_caption=row.get("target_global_caption"),
                local_caption=row.get("target_local_caption"),
            )
            problem = row.get("_problem")
            if not problem:
                missing = [k for k in ("img_id", "instruction") if not row.get(k)]
                if missing or bad_turn:
                    problem = f"missing or invalid field(s) {', '.join(missing + ['turn_index'] * bad_turn)}"
            if not problem and isinstance(table, JsonlTable):
                for column in IMAGE_COLUMNS:
                    value = row.get(column)
                    if isinstance(value, str) and not (table.source.parent / value).is_file():
                        problem = f"{column} file not found: {table.source.parent / value}"
                        break
            self._add(turn, problem)
        for entry in self.entries.values():
            entry.turns.sort(key=lambda t: t.turn)

    # ---------------------------------------------------------------------------------------------- samples
    def sessions(self) -> list[str]:
        """The distinct session (source image) ids, in order."""
        return list(dict.fromkeys(t.img_id for e in self.entries.values() for t in e.turns))

    def _index(self) -> list[tuple[str, TaskType | None]]:
        ids = list(self.entries)
        if self.iterative:  # a chained turn must come after the turn it edits on: sessions in turn order
            first = {img_id: n for n, img_id in enumerate(dict.fromkeys(e.img_id for e in self.entries.values()))}
            ids.sort(key=lambda sid: (first[self.entries[sid].img_id], self._turn_of(sid)))
        return [(sid, None) for sid in ids]

    def _turn_of(self, sample_id: str) -> int:
        turns = self.entries[sample_id].turns
        return turns[0].turn if turns else 0

    def source_key(self, sample_id: str) -> str:
        """The session (img_id): every turn of a session is edited on one worker, in order."""
        entry = self.entries.get(sample_id)
        return entry.img_id if entry is not None else sample_id

    def chain_from(self, sample_id: str) -> str | None:
        """With ``iterative``, the session's previous turn (``<img_id>_t<k-1>``); else None."""
        entry = self.entries.get(sample_id)
        if not self.iterative or entry is None or not entry.turns:
            return None
        earlier = [k for k in self.session_turns[entry.img_id] if k < entry.turns[0].turn]
        return self._turn_id(entry.img_id, earlier[-1]) if earlier else None

    def scored(self, sample_id: str) -> bool:
        """False only for the earlier turns of an iterative ``final_turn`` evaluation."""
        entry = self.entries.get(sample_id)
        if not (self.iterative and self.evaluation == "final_turn") or entry is None or not entry.turns:
            return True
        return entry.turns[0].turn == self.session_turns[entry.img_id][-1]

    def load(self, sample_id: str) -> Sample:
        turns = self.entry(sample_id).turns
        first, last = turns[0], turns[-1]
        source = first.source.open("source image", first.where)
        target = last.target.open("target image", last.where)
        mask = None
        if self.use_mask:
            union: np.ndarray | None = None
            for t in turns:
                if t.mask is None:
                    continue
                raw = t.mask.open("mask", t.where)
                ref = source if t is first else t.source.open("source image", t.where)
                check_same_size(raw, ref, t.mask.describe(), t.source.describe(), t.where)
                m = np.asarray(mask_from_image(raw, ref)) > 0
                union = m if union is None else (union | m)
            if union is not None:
                mask = Image.fromarray((union * 255).astype(np.uint8))
        instructions = [t.instruction for t in turns]
        meta: dict[str, Any] = {
            "img_id": first.img_id,
            "turn_index": first.turn if self.per_turn else last.turn,
            "turns": len(turns),
            "evaluation": self.evaluation,
            "turn_instructions": instructions,
        }
        if self.iterative:
            meta["iterative"] = True
        if last.local_caption:
            meta["local_caption"] = last.local_caption
        return Sample(
            id=sample_id,
            source_image=resize_square(source.convert("RGB"), self.size),
            source_prompt=first.source_caption,
            target_prompt=last.target_caption,
            instruction="; ".join(instructions),
            mask=resize_square(mask, self.size, mask=True),
            target_image=resize_square(target.convert("RGB"), self.size),
            task_type=None,
            meta={"magicbrush": meta},
        )
