"""Reading benchmark index files row by row, so that one bad row stays that row's problem.

Index files (a JSONL or CSV samples file, a JSON mapping or list of entries) are read as bytes and split into
rows before anything is decoded: a row whose bytes are not valid UTF-8, or whose JSON does not parse, becomes a
:class:`Row` with a ``problem`` (naming the byte offset in the file) while every other row is read as usual.
Loaders turn row problems into sample errors (``on_error="skip"``) or a one-line :class:`DatasetFormatError`
naming the file, the row and the offset (``on_error="raise"``). Nothing here ever puts a file's contents in a
message.

Undecodable bytes are carried through parsing as lone surrogates (Python's ``surrogateescape``), which is how
a row's readable fields, its id in particular, are still available to name the error.
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_SURROGATE = re.compile("[\udc80-\udcff]")
_WS = re.compile(r"[ \t\n\r]*")


class DatasetFormatError(ValueError):
    """A dataset's index file is unusable, as a whole or (with ``on_error="raise"``) in one of its rows."""


@dataclass
class Row:
    """One row of an index file: its number, its parsed value (None when unreadable) and its problem.

    ``number`` is the line (JSONL), the record's first line (CSV) or the 0-based position (JSON entries)."""

    number: int
    value: Any
    problem: str | None = None
    key: str | None = None  # JSON objects of entries: the entry's key (None when the key itself is unreadable)


def _bad_byte(data: bytes, base: int = 0) -> str | None:
    """Where ``data`` (starting at file offset ``base``) stops being UTF-8, or None when it all decodes."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as err:
        return f"not valid UTF-8 at byte offset {base + err.start} (byte 0x{data[err.start]:02x})"
    return None


def has_bad_text(value: Any) -> bool:
    """Whether a parsed value holds text that came from undecodable bytes (lone surrogates)."""
    if isinstance(value, str):
        return bool(_SURROGATE.search(value))
    if isinstance(value, dict):
        return any(has_bad_text(k) or has_bad_text(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(has_bad_text(v) for v in value)
    return False


def _read_bytes(path: Path) -> bytes:
    data = Path(path).read_bytes()
    return data[3:] if data.startswith(b"\xef\xbb\xbf") else data


def _location(text: str, index: int) -> tuple[int, int]:
    """(1-based line, byte offset) of character ``index`` of a surrogate-escaped text."""
    return text.count("\n", 0, index) + 1, len(text[:index].encode("utf-8", "surrogateescape"))


def read_text(path: Path) -> str:
    """The whole file as text; bytes that are not UTF-8 raise a one-line :class:`DatasetFormatError` naming the
    line and byte offset (for files that cannot be read row by row)."""
    data = _read_bytes(path)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise DatasetFormatError(
            f"{path}: not valid UTF-8 at line {line}, byte offset {err.start} (byte 0x{data[err.start]:02x})"
        ) from None


def read_json_file(path: Path) -> Any:
    """Parse a JSON file; invalid UTF-8 or JSON raises a one-line :class:`DatasetFormatError` naming the file."""
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as err:
        raise DatasetFormatError(f"{path}: not valid JSON ({err})") from None


def jsonl_rows(path: Path) -> list[Row]:
    """Rows of a JSON-lines file (blank lines skipped); row numbers are line numbers."""
    data = _read_bytes(path)
    rows: list[Row] = []
    offset = 0
    for number, raw in enumerate(data.split(b"\n"), start=1):
        start, offset = offset, offset + len(raw) + 1
        if not raw.strip():
            continue
        text = raw.decode("utf-8", "surrogateescape")
        try:
            value = json.loads(text)
        except json.JSONDecodeError as err:
            rows.append(Row(number, None, _bad_byte(raw, start) or f"invalid JSON ({err})"))
            continue
        rows.append(Row(number, value, _bad_byte(raw, start)))
    return rows


def csv_records(path: Path) -> list[Row]:
    """Records of a CSV file as lists of cells (a record may span lines); numbers are the record's first line."""
    data = _read_bytes(path)
    line_starts = [0] + [m.end() for m in re.finditer(rb"\n", data)]
    reader = csv.reader(io.StringIO(data.decode("utf-8", "surrogateescape"), newline=""))
    rows: list[Row] = []
    first = 1
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as err:
            raise DatasetFormatError(f"{path}: not a readable CSV file at line {reader.line_num} ({err})") from None
        problem = None
        if has_bad_text(cells):
            for line in range(first, reader.line_num + 1):
                start = line_starts[line - 1]
                end = line_starts[line] if line < len(line_starts) else len(data)
                problem = _bad_byte(data[start:end], start)
                if problem:
                    break
        rows.append(Row(first, cells, problem))
        first = reader.line_num + 1
    return rows


def csv_dict_rows(path: Path) -> tuple[list[str], list[Row]]:
    """(header, rows as dicts) of a CSV file with a header row; empty cells are left out of each dict. A row with
    more cells than the header has a problem."""
    records = csv_records(path)
    if not records:
        return [], []
    header_row = records[0]
    if header_row.problem:
        raise DatasetFormatError(f"{path}, row {header_row.number} (header): {header_row.problem}")
    header = [h.strip() for h in header_row.value]
    rows = []
    for rec in records[1:]:
        cells = rec.value
        if not any(c.strip() for c in cells):
            continue
        problem = rec.problem
        if not problem and len(cells) > len(header):
            problem = f"{len(cells) - len(header)} more cells than header columns"
        rows.append(Row(rec.number, {k: v for k, v in zip(header, cells) if v != ""}, problem))
    return header, rows


def json_entries(path: Path) -> tuple[type, list[Row]]:
    """The entries of a JSON document whose top level is an object (``{id: entry}``: rows carry ``key``) or a list
    (rows are its items). An entry holding bytes that are not UTF-8 gets a problem naming its line and byte offset;
    JSON that does not parse fails the whole file (one line, with line and byte offset)."""
    text = _read_bytes(path).decode("utf-8", "surrogateescape")
    decoder = json.JSONDecoder()

    def fail(index: int, why: str) -> DatasetFormatError:
        line, offset = _location(text, index)
        return DatasetFormatError(f"{path}: not valid JSON at line {line}, byte offset {offset} ({why})")

    def skip(index: int) -> int:
        return _WS.match(text, index).end()  # type: ignore[union-attr]

    def decode(index: int) -> tuple[Any, int]:
        try:
            return decoder.raw_decode(text, index)
        except json.JSONDecodeError as err:
            raise fail(err.pos, err.msg) from None

    i = skip(0)
    if i >= len(text) or text[i] not in "{[":
        if i < len(text):
            value, end = decode(i)
            if skip(end) == len(text):
                return type(value), []
        raise fail(i, "expected an object or a list of entries")
    is_object, close = text[i] == "{", "}" if text[i] == "{" else "]"
    rows: list[Row] = []
    i = skip(i + 1)
    if i < len(text) and text[i] == close:
        return (dict if is_object else list), rows
    while True:
        start = i
        key = None
        if is_object:
            if i >= len(text) or text[i] != '"':
                raise fail(i, "expected a string key")
            key, i = decode(i)
            i = skip(i)
            if i >= len(text) or text[i] != ":":
                raise fail(i, "expected ':' after a key")
            i = skip(i + 1)
        value, end = decode(i)
        problem = None
        bad = _SURROGATE.search(text, start, end)
        if bad:
            line, offset = _location(text, bad.start())
            problem = f"not valid UTF-8 at line {line}, byte offset {offset}"
        readable_key = None if key is None or has_bad_text(key) else key
        rows.append(Row(len(rows), value, problem, readable_key))
        i = skip(end)
        if i < len(text) and text[i] == ",":
            i = skip(i + 1)
            continue
        if i < len(text) and text[i] == close:
            break
        raise fail(i, f"expected ',' or '{close}'")
    if skip(i + 1) != len(text):
        raise fail(skip(i + 1), "extra data after the document")
    return (dict if is_object else list), rows
