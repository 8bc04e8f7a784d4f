"""EditEval v1 (Huang et al., 2024, the survey's benchmark): 50 Unsplash images in 7 task folders.

Layout (``EditEval_v1/Dataset`` of the survey's repository)::

    <root>/editing_prompts_collection.xlsx
    <root>/object_addition/1.jpg ...     <root>/object_replacement/ ...   <root>/object_removel/ ...
    <root>/background_change/ ...        <root>/style_change/ ...         <root>/texture_change/ ...
    <root>/action_change/ ...

(the removal folder really is spelled ``object_removel``). The spreadsheet has one row per image with an
edit-class column (filled on the first row of each class; the cells below it are empty or merged), ``Source
Prompt``, ``Target Prompt`` and an instruction column. Within a class, the n-th row describes ``<folder>/<n>``
with a ``.jpg``, ``.jpeg`` or ``.png`` suffix. A CSV export of the spreadsheet works too. The ``.xlsx`` is read
with the standard library (no spreadsheet package needed).
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Iterable
from pathlib import Path
from xml.etree import ElementTree

from editlab.datasets.folder import DatasetFormatError, LocalBenchmark, find_image, open_image, resize_square
from editlab.datasets.rows import csv_records, has_bad_text
from editlab.types import Sample, TaskType

#: task folder -> survey task type
EDITEVAL_FOLDERS: dict[str, TaskType] = {
    "object_addition": TaskType.OBJECT_ADDITION,
    "object_replacement": TaskType.OBJECT_REPLACEMENT,
    "object_removel": TaskType.OBJECT_REMOVAL,
    "background_change": TaskType.BACKGROUND_CHANGE,
    "style_change": TaskType.STYLE_CHANGE,
    "texture_change": TaskType.TEXTURE_CHANGE,
    "action_change": TaskType.POSE_ACTION,
}

#: spreadsheet class names (normalised) that name a folder differently
_CLASS_ALIASES = {
    "object_removal": "object_removel",
    "overall_style_change": "style_change",
    "addition": "object_addition",
    "replacement": "object_replacement",
    "removal": "object_removel",
    "background": "background_change",
    "style": "style_change",
    "texture": "texture_change",
    "action": "action_change",
}
_CLASS_HEADERS = {"edit class", "edit_class", "class", "task", "category", "edit type", "editing type"}

_M = "{http://schemas.openxmlformats.org/spreadsheetml/2006/main}"
_R = "{http://schemas.openxmlformats.org/officeDocument/2006/relationships}"
_PR = "{http://schemas.openxmlformats.org/package/2006/relationships}"


def _column_index(ref: str) -> int:
    letters = re.match(r"[A-Z]+", ref.upper())
    if not letters:
        raise ValueError(f"bad cell reference {ref!r}")
    index = 0
    for ch in letters.group(0):
        index = index * 26 + (ord(ch) - 64)
    return index - 1


def _text_of(node: ElementTree.Element) -> str:
    """Text of a shared or inline string: plain ``<t>`` or rich-text runs, phonetic hints left out."""
    parts = []
    for child in node:
        if child.tag == f"{_M}t":
            parts.append(child.text or "")
        elif child.tag == f"{_M}r":
            parts.extend(t.text or "" for t in child.iter(f"{_M}t"))
    return "".join(parts)


def read_xlsx(path: Path) -> list[tuple[int, list[str | None]]]:
    """Rows of the first worksheet of an ``.xlsx`` file as (spreadsheet row number, cell strings)."""
    with zipfile.ZipFile(path) as z:
        names = set(z.namelist())
        shared: list[str] = []
        if "xl/sharedStrings.xml" in names:
            shared = [_text_of(si) for si in ElementTree.fromstring(z.read("xl/sharedStrings.xml"))
                      if si.tag == f"{_M}si"]
        sheet = "xl/worksheets/sheet1.xml"
        if "xl/workbook.xml" in names and "xl/_rels/workbook.xml.rels" in names:
            first = ElementTree.fromstring(z.read("xl/workbook.xml")).find(f"{_M}sheets/{_M}sheet")
            rels = {r.get("Id"): r.get("Target", "") for r in
                    ElementTree.fromstring(z.read("xl/_rels/workbook.xml.rels")).iter(f"{_PR}Relationship")}
            target = rels.get(first.get(f"{_R}id")) if first is not None else None
            if target:
                sheet = target.lstrip("/") if target.startswith("/") else f"xl/{target}"
        rows: list[tuple[int, list[str | None]]] = []
        for number, row in enumerate(ElementTree.fromstring(z.read(sheet)).iter(f"{_M}row"), start=1):
            row_no = int(row.get("r", number))
            cells: dict[int, str | None] = {}
            for position, cell in enumerate(row.findall(f"{_M}c")):
                col = _column_index(cell.get("r")) if cell.get("r") else position
                kind, value = cell.get("t"), cell.find(f"{_M}v")
                if kind == "s" and value is not None and value.text is not None:
                    cells[col] = shared[int(value.text)]
                elif kind == "inlineStr":
                    inline = cell.find(f"{_M}is")
                    cells[col] = _text_of(inline) if inline is not None else None
                elif kind == "b" and value is not None:
                    cells[col] = "TRUE" if value.text == "1" else "FALSE"
                else:
                    cells[col] = value.text if value is not None else None
            width = max(cells) + 1 if cells else 0
            rows.append((row_no, [cells.get(i) for i in range(width)]))
    return rows


def read_table(path: Path) -> list[tuple[int, list[str | None], str | None]]:
    """Rows of an ``.xlsx`` or ``.csv`` file as (row number, cells, problem); a CSV row whose bytes are not UTF-8
    keeps its number and gets a problem naming the byte offset; a file that cannot be read at all raises a clear
    error."""
    try:
        if path.suffix.lower() == ".csv":
            return [(r.number, [c if c != "" else None for c in r.value], r.problem) for r in csv_records(path)]
        return [(n, cells, None) for n, cells in read_xlsx(path)]
    except (zipfile.BadZipFile, ElementTree.ParseError, KeyError, ValueError, IndexError) as err:
        if isinstance(err, DatasetFormatError):
            raise
        raise DatasetFormatError(f"{path}: not a readable spreadsheet ({type(err).__name__}: {err})") from err


def _norm(text: str) -> str:
    return re.sub(r"[\s\-]+", "_", text.strip().lower())


def folder_for_class(name: str) -> str | None:
    """The task folder of a spreadsheet edit class ("Object Removal" -> ``object_removel``), or None."""
    key = _norm(name)
    key = _CLASS_ALIASES.get(key, key)
    return key if key in EDITEVAL_FOLDERS else None


class EditEvalDataset(LocalBenchmark):
    """EditEval v1 from its task folders and prompts spreadsheet; ids look like ``object_removel-3``."""

    name = "editeval"
    label = "EditEval"
    single_split = "test"

    def __init__(
        self,
        root: str,
        split: str = "test",
        task_types: Iterable[str | TaskType] | None = None,
        limit: int | None = None,
        on_error: str = "raise",
        spreadsheet: str = "editing_prompts_collection.xlsx",
        size: int | None = None,
    ) -> None:
        super().__init__(root, split, task_types, limit, on_error)
        self.sheet_path = self.root / spreadsheet
        self.size = size
        self._read()

    def _columns(self, header: list[str | None], row_no: int) -> tuple[int, int, int, int | None]:
        names = [(h or "").strip().lower() for h in header]

        def find(word: str) -> int | None:
            return next((i for i, h in enumerate(names) if word in h), None)

        src, tgt, ins = find("source"), find("target"), find("instruction")
        if src is None or tgt is None:
            raise DatasetFormatError(f"{self.sheet_path}, row {row_no}: header has no 'Source Prompt' and "
                                     f"'Target Prompt' columns (found {[h for h in header if h]})")
        cls = next((i for i, h in enumerate(names) if h in _CLASS_HEADERS), None)
        if cls is None:
            cls = next((i for i in range(len(names)) if i not in (src, tgt, ins)), None)
        if cls is None:
            raise DatasetFormatError(f"{self.sheet_path}, row {row_no}: no edit-class column before the prompts")
        return cls, src, tgt, ins

    def _read(self) -> None:
        self.require_file(self.sheet_path, "prompts spreadsheet",
                          "EditEval_v1/Dataset (the 7 task folders and editing_prompts_collection.xlsx)")
        table = [row for row in read_table(self.sheet_path) if any(c and c.strip() for c in row[1])]
        problems = {n: problem for n, _, problem in table if problem}
        rows = [(n, cells) for n, cells, _ in table]
        if not rows:
            raise DatasetFormatError(f"{self.sheet_path}: the spreadsheet is empty")
        header_no, header = rows[0]
        cls_col, src_col, tgt_col, ins_col = self._columns(header, header_no)
        # some copies put the first class name in the header cell of the class column
        current = header[cls_col] if cls_col < len(header) and header[cls_col] and \
            folder_for_class(header[cls_col]) else None
        counters: dict[str, int] = {}

        def cell(cells: list[str | None], col: int | None) -> str | None:
            value = cells[col] if col is not None and col < len(cells) else None
            return value.strip() if value and value.strip() else None

        if rows and rows[0][0] in problems:
            raise DatasetFormatError(f"{self.sheet_path}, row {rows[0][0]} (header): {problems[rows[0][0]]}")
        for row_no, cells in rows[1:]:
            where = f"{self.sheet_path}, row {row_no}"
            if row_no in problems:  # still counted: the n-th row of a class describes its n-th image
                cells = [None if c is None or has_bad_text(c) else c for c in cells]
            given = cell(cells, cls_col)
            if given:
                current = given
            folder = folder_for_class(current) if current else None
            if folder is None:
                sid = f"row{row_no}"
                self.entries[sid] = {"task": None, "row": row_no}
                problem = (f"unknown edit class '{current}' (expected one of "
                           f"{', '.join(EDITEVAL_FOLDERS)})" if current else "no edit class before this row")
                self.issues.add(sid, where, problem)
                continue
            counters[folder] = counters.get(folder, 0) + 1
            index = counters[folder]
            sid = f"{folder}-{index}"
            if row_no in problems:
                self.entries[sid] = {"task": EDITEVAL_FOLDERS[folder], "row": row_no}
                self.issues.add(sid, where, problems[row_no])
                continue
            source, target, instruction = cell(cells, src_col), cell(cells, tgt_col), cell(cells, ins_col)
            image = find_image(self.root / folder, str(index))
            self.entries[sid] = {
                "task": EDITEVAL_FOLDERS[folder], "row": row_no, "folder": folder, "index": index,
                "edit_class": current, "source": source, "target": target, "instruction": instruction,
                "image": image,
            }
            empty = [name for name, value in (("Source Prompt", source), ("Target Prompt", target)) if not value]
            if empty:
                self.issues.add(sid, where, f"unreadable row: empty {' and '.join(empty)}")
            elif image is None:
                self.issues.add(sid, where, f"image file not found: {self.root / folder}/{index}.jpg "
                                            f"(or .jpeg/.png)")

    def _index(self) -> list[tuple[str, TaskType | None]]:
        return [(sid, e["task"]) for sid, e in self.entries.items()]

    def load(self, sample_id: str) -> Sample:
        e = self.entry(sample_id)
        image = open_image(e["image"], "image", f"{self.sheet_path.name} row {e['row']}")
        return Sample(
            id=sample_id,
            source_image=resize_square(image.convert("RGB"), self.size),
            source_prompt=e["source"],
            target_prompt=e["target"],
            instruction=e["instruction"],
            task_type=e["task"],
            meta={"editeval": {"folder": e["folder"], "index": e["index"], "row": e["row"],
                               "edit_class": e["edit_class"], "image": e["image"].name}},
        )
