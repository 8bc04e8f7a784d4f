"""PIE-Bench (Ju et al., 2024, "PnP Inversion"): 700 images, 10 editing types, annotated edit masks.

Layout (the ``data`` folder of the PnPInversion repository)::

    <root>/mapping_file.json
    <root>/annotation_images/<type folder>/<...>/<id>.jpg

``mapping_file.json`` maps a 12-digit id to ``image_path`` (relative to ``annotation_images``),
``original_prompt``, ``editing_prompt`` (changed words in brackets), ``editing_instruction``,
``editing_type_id`` ("0"-"9"), ``blended_word`` and ``mask``. The mask is PIE's own run-length encoding: a
flat list of (start, length) pairs over the row-major flattened 512 x 512 image (not COCO RLE).

Images are brought to 512 x 512 as PIE's ``load_512`` does: centre-crop to a square, then resize. Prompts
lose their bracket marks (the raw ones stay in ``meta``); the original id and editing type are kept in
``meta["pie"]``. A ``blended_word`` of two words (source word, target word) becomes ``meta["blend_words"]``
(``[[source word], [target word]]``), the words Prompt-to-Prompt blends and reweights, as PIE-Bench's
``run_editing_p2p.py`` uses them; an empty or one-word ``blended_word`` gives none (PIE then runs no blend).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from PIL import Image

from editlab.datasets.folder import DatasetFormatError, LocalBenchmark, open_image
from editlab.datasets.rows import json_entries
from editlab.types import Sample, SampleError, TaskType

PIE_SIZE = 512

#: editing_type_id -> (PIE's name, folder under annotation_images, survey task type or None)
PIE_TYPES: dict[int, tuple[str, str, TaskType | None]] = {
    0: ("random editing", "0_random_140", None),
    1: ("change object", "1_change_object_80", TaskType.OBJECT_REPLACEMENT),
    2: ("add object", "2_add_object_80", TaskType.OBJECT_ADDITION),
    3: ("delete object", "3_delete_object_80", TaskType.OBJECT_REMOVAL),
    4: ("change content", "4_change_attribute_content_40", TaskType.EMOTION_EXPRESSION),
    5: ("change pose", "5_change_attribute_pose_40", TaskType.POSE_ACTION),
    6: ("change color", "6_change_attribute_color_40", TaskType.COLOR_CHANGE),
    7: ("change material", "7_change_attribute_material_40", TaskType.TEXTURE_CHANGE),
    8: ("change background", "8_change_background_80", TaskType.BACKGROUND_CHANGE),
    9: ("change style", "9_change_style_80", TaskType.STYLE_CHANGE),
}

_REQUIRED = ("image_path", "original_prompt", "editing_prompt", "editing_type_id", "mask")


def strip_brackets(prompt: str) -> str:
    """A PIE prompt without its ``[...]`` edit marks (as PIE's evaluation strips them)."""
    return re.sub(r"\s+", " ", prompt.replace("[", "").replace("]", "")).strip()


def parse_rle(encoded: Any, size: int = PIE_SIZE) -> list[tuple[int, int]]:
    """Validate a PIE run-length encoding (list or whitespace-separated string) into (start, length) pairs.

    Raises ``ValueError`` with a specific message: non-integers, an odd count, negative values, or a run that
    starts outside a ``size`` x ``size`` mask (the encoding belongs to an image of another size).
    """
    if isinstance(encoded, str):
        encoded = encoded.split()
    if not isinstance(encoded, list | tuple):
        raise ValueError(f"mask must be a list of (start, length) integers, got {type(encoded).__name__}")
    try:
        values = [int(v) for v in encoded]
    except (TypeError, ValueError) as err:
        raise ValueError(f"mask contains a non-integer value ({err})") from None
    if len(values) % 2:
        raise ValueError(f"mask has {len(values)} values; PIE's RLE needs (start, length) pairs")
    total = size * size
    pairs = list(zip(values[0::2], values[1::2]))
    for start, length in pairs:
        if start < 0 or length < 0:
            raise ValueError(f"mask run ({start}, {length}) has a negative value")
        if start >= total:
            raise ValueError(
                f"mask size mismatch: a run starts at pixel {start} but a {size}x{size} mask has only {total} pixels"
            )
    return pairs


def decode_rle(pairs: Iterable[tuple[int, int]], size: int = PIE_SIZE, border: bool = False) -> np.ndarray:
    """Binary ``size`` x ``size`` uint8 mask (1 = edit) from (start, length) runs over the flattened image.

    Runs reaching past the last pixel are clipped, as PIE's ``mask_decode`` does. ``border`` sets the one-pixel
    image border to 1, which ``mask_decode`` also does "to avoid annotation errors"; editlab's PIE metrics apply
    that border themselves, so it is off by default.
    """
    flat = np.zeros(size * size, dtype=np.uint8)
    for start, length in pairs:
        flat[start:min(start + length, flat.size)] = 1
    mask = flat.reshape(size, size)
    if border:
        mask[0, :] = mask[-1, :] = 1
        mask[:, 0] = mask[:, -1] = 1
    return mask


def load_512(image: Image.Image, size: int = PIE_SIZE) -> Image.Image:
    """PIE's ``load_512``: centre-crop to a square, then resize to ``size`` x ``size``."""
    image = image.convert("RGB")
    w, h = image.size
    if w != h:
        side = min(w, h)
        left, top = (w - side) // 2, (h - side) // 2
        image = image.crop((left, top, left + side, top + side))
    return image if image.size == (size, size) else image.resize((size, size), Image.BICUBIC)


class PIEBenchDataset(LocalBenchmark):
    """PIE-Bench from its published ``mapping_file.json`` and ``annotation_images`` folder.

    ``task_map`` overrides the editing-type mapping (``{editing_type_id: task type or None}``); ``mask_border``
    reproduces ``mask_decode``'s forced border; ``resize=False`` keeps images at their stored size (the masks
    are always 512 x 512, so a different size then fails that sample).
    """

    name = "pie_bench"
    label = "PIE-Bench"
    single_split = "test"

    def __init__(
        self,
        root: str,
        split: str = "test",
        task_types: Iterable[str | TaskType] | None = None,
        limit: int | None = None,
        on_error: str = "raise",
        mapping_file: str = "mapping_file.json",
        images: str = "annotation_images",
        resize: bool = True,
        mask_border: bool = False,
        task_map: Mapping[int | str, str | None] | None = None,
    ) -> None:
        super().__init__(root, split, task_types, limit, on_error)
        self.mapping_path = self.root / mapping_file
        self.images_dir = self.root / images
        self.resize = resize
        self.mask_border = mask_border
        self.types = {k: v[2] for k, v in PIE_TYPES.items()}
        for key, value in (task_map or {}).items():
            self.types[int(key)] = None if value in (None, "", "null") else TaskType(value)
        self._read()

    def _read(self) -> None:
        self.require_file(self.mapping_path, "mapping file",
                          "the PnPInversion 'data' folder (mapping_file.json + annotation_images/)")
        kind, rows = json_entries(self.mapping_path)
        if kind is not dict:
            raise DatasetFormatError(f"{self.mapping_path}: expected an object of id -> entry, got {kind.__name__}")
        for row in rows:
            position, entry = row.number, row.value
            sid = row.key if row.key is not None else f"entry{position}"
            where = f"{self.mapping_path}, entry {position} ('{sid}')"
            if sid in self.entries:
                sid = f"{sid}-entry{position}"
                self.entries[sid] = {"position": position, "task": None}
                self.issues.add(sid, where, "duplicate id")
                continue
            record: dict[str, Any] = {"position": position, "task": None}
            self.entries[sid] = record
            if row.problem:
                self.issues.add(sid, where, row.problem)
                continue
            if not isinstance(entry, dict):
                self.issues.add(sid, where, f"expected an object, got {type(entry).__name__}")
                continue
            missing = [k for k in _REQUIRED if k not in entry]
            if missing:
                self.issues.add(sid, where, f"missing field(s) {', '.join(missing)}")
                continue
            try:
                type_id = int(str(entry["editing_type_id"]).strip())
            except ValueError:
                type_id = -1
            if type_id not in PIE_TYPES:
                valid = ", ".join(f"{k} ({v[0]})" for k, v in PIE_TYPES.items())
                self.issues.add(sid, where, f"unknown editing_type_id {entry['editing_type_id']!r}; PIE-Bench "
                                            f"defines {valid}")
                continue
            record.update(entry=entry, type_id=type_id, task=self.types[type_id])
            try:
                record["rle"] = parse_rle(entry["mask"])
            except ValueError as err:
                self.issues.add(sid, where, str(err))
                continue
            image_path = self.images_dir / str(entry["image_path"])
            record["image_path"] = image_path
            if not image_path.is_file():
                self.issues.add(sid, where, f"image file not found: {image_path}")

    def _index(self) -> list[tuple[str, TaskType | None]]:
        return [(sid, rec["task"]) for sid, rec in self.entries.items()]

    def load(self, sample_id: str) -> Sample:
        rec = self.entry(sample_id)
        entry, type_id = rec["entry"], rec["type_id"]
        where = f"{self.mapping_path.name} entry '{sample_id}'"
        image = open_image(rec["image_path"], "image", where)
        if self.resize:
            image = load_512(image)
        elif image.size != (PIE_SIZE, PIE_SIZE):
            raise SampleError(f"mask size ({PIE_SIZE}, {PIE_SIZE}) differs from image size {image.size}: mask RLE "
                              f"vs image {rec['image_path']} ({where}); set resize=true for PIE's load_512")
        mask = decode_rle(rec["rle"], PIE_SIZE, self.mask_border)
        blended = str(entry.get("blended_word") or "").split()
        # PIE's blended_word is "<source word> <target word>"; its P2P runs blend on ((w0,), (w1,))
        blend_words = {"blend_words": [[blended[0]], [blended[1]]]} if len(blended) >= 2 else {}
        instruction = entry.get("editing_instruction")
        return Sample(
            id=sample_id,
            source_image=image.convert("RGB"),
            source_prompt=strip_brackets(str(entry["original_prompt"])),
            target_prompt=strip_brackets(str(entry["editing_prompt"])),
            instruction=None if instruction is None else str(instruction),
            mask=Image.fromarray(mask * 255),
            task_type=rec["task"],
            meta={
                "pie": {
                    "id": sample_id,
                    "editing_type_id": type_id,
                    "editing_type": PIE_TYPES[type_id][0],
                    "image_path": str(entry["image_path"]),
                    "original_prompt": str(entry["original_prompt"]),
                    "editing_prompt": str(entry["editing_prompt"]),
                    "blended_word": blended,
                },
                **blend_words,
            },
        )
