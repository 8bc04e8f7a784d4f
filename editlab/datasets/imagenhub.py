"""ImagenHub's text-guided and mask-guided image editing sets (Ku et al., 2024), Hugging Face datasets.

``ImagenHub/Text_Guided_Image_Editing`` and ``ImagenHub/Mask_Guided_Image_Editing`` are built from MagicBrush's
dev split; both have the splits ``filtered`` (179 rows, the set ImagenHub's tables report), ``extra`` (249)
and ``dev`` (528), and the columns ``img_id``, ``turn_index``, ``source_img``, ``mask_img``, ``target_img``,
``instruction``, ``source_global_caption``, ``target_global_caption`` and ``target_local_caption``.

Local layouts (see :func:`editlab.datasets.magicbrush.find_hf_table`): the hub's parquet files
``<root>/data/<split>-*.parquet`` (needs ``pyarrow``), a ``datasets.save_to_disk`` folder (needs ``datasets``)
or ``<root>/<split>/metadata.jsonl`` with image paths. ``editlab data prepare imagenhub_text`` (or
``imagenhub_mask``) downloads the parquet files when online.

Samples carry the global captions as the prompt pair and the instruction; the mask-guided set adds the mask
(stored in the alpha channel, transparent where edited) and the local caption (``meta``). Ids follow
ImagenHub's file names: ``sample_<img_id>_<turn_index>``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from editlab.datasets.folder import LocalBenchmark, check_same_size, resize_square
from editlab.datasets.magicbrush import IMAGE_COLUMNS, HFTable, JsonlTable, find_hf_table, mask_from_image
from editlab.types import Sample, SampleError, TaskType

IMAGENHUB_SPLITS = ("filtered", "extra", "dev")
_TEXT_FIELDS = ("img_id", "turn_index", "instruction", "source_global_caption", "target_global_caption")


class ImagenHubDataset(LocalBenchmark):
    """Base of the two ImagenHub editing sets; subclasses set ``hub_id`` and whether masks are used."""

    name = "imagenhub"
    label = name
    hub_id = ""
    needs_mask = False
    entries: dict[str, int]

    def __init__(
        self,
        root: str,
        split: str = "filtered",
        task_types: Iterable[str | TaskType] | None = None,
        limit: int | None = None,
        on_error: str = "raise",
        size: int | None = None,
        download: bool = False,
    ) -> None:
        if split not in IMAGENHUB_SPLITS:
            raise ValueError(f"unknown ImagenHub split {split!r}; valid: {', '.join(IMAGENHUB_SPLITS)}")
        super().__init__(root, split, task_types, limit, on_error)
        self.size = size
        table = find_hf_table(self.root, split, IMAGE_COLUMNS)
        if table is None and download:
            from editlab.datasets.prepare import fetch_hf_parquet

            fetch_hf_parquet(self.hub_id, self.root, split)
            table = find_hf_table(self.root, split, IMAGE_COLUMNS)
        if table is None:
            raise self.not_found(
                f"{self.hub_id} split '{split}' not found under {self.root}: expected parquet files "
                f"{self.root}/data/{split}-*.parquet, a datasets.save_to_disk folder, or {self.root / split}/"
                f"metadata.jsonl"
            )
        self.table: HFTable = table
        self._read()

    def _read(self) -> None:
        required = _TEXT_FIELDS + (("mask_img",) if self.needs_mask and isinstance(self.table, JsonlTable) else ())
        for index, row in enumerate(self.table.rows):
            where = f"{self.table.source}, row {index}"
            sid = f"sample_{row.get('img_id')}_{row.get('turn_index')}"
            if row.get("img_id") is None or row.get("turn_index") is None:
                sid = f"row{index}"
            if sid in self.entries:
                sid = f"{sid}-row{index}"
                self.entries[sid] = index
                self.issues.add(sid, where, "duplicate (img_id, turn_index)")
                continue
            self.entries[sid] = index
            problem = row.get("_problem")
            missing = [k for k in required if row.get(k) in (None, "")]
            if problem:
                self.issues.add(sid, where, problem)
            elif missing:
                self.issues.add(sid, where, f"unreadable row: missing {', '.join(missing)}")
            elif isinstance(self.table, JsonlTable):
                for column in IMAGE_COLUMNS:
                    value = row.get(column)
                    if column == "mask_img" and not self.needs_mask:
                        continue
                    if isinstance(value, str) and not (self.table.source.parent / value).is_file():
                        self.issues.add(sid, where, f"{column} file not found: {self.table.source.parent / value}")
                        break

    def _index(self) -> list[tuple[str, TaskType | None]]:
        return [(sid, None) for sid in self.entries]

    def _image(self, index: int, column: str, what: str, where: str) -> Any:
        try:
            return self.table.image(index, column)
        except SampleError as err:
            raise SampleError(f"{what}: {err} ({where})") from err

    def load(self, sample_id: str) -> Sample:
        index = self.entry(sample_id)
        row = self.table.rows[index]
        where = f"{self.table.source.name} row {index}"
        source = self._image(index, "source_img", "source image", where)
        target = self._image(index, "target_img", "target image", where)
        mask = None
        if self.needs_mask:
            raw = self._image(index, "mask_img", "mask", where)
            check_same_size(raw, source, self.table.describe(index, "mask_img"),
                            self.table.describe(index, "source_img"), where)
            mask = mask_from_image(raw, source)
        meta = {k: row[k] for k in ("img_id", "turn_index", "target_local_caption") if row.get(k) is not None}
        return Sample(
            id=sample_id,
            source_image=resize_square(source.convert("RGB"), self.size),
            source_prompt=str(row["source_global_caption"]),
            target_prompt=str(row["target_global_caption"]),
            instruction=str(row["instruction"]),
            mask=resize_square(mask, self.size, mask=True),
            target_image=resize_square(target.convert("RGB"), self.size),
            task_type=None,
            meta={"imagenhub": meta},
        )


class ImagenHubTextDataset(ImagenHubDataset):
    """ImagenHub text-guided image editing (instruction and global captions, no mask)."""

    name = "imagenhub_text"
    label = name
    hub_id = "ImagenHub/Text_Guided_Image_Editing"
    needs_mask = False


class ImagenHubMaskDataset(ImagenHubDataset):
    """ImagenHub mask-guided image editing (adds the edit mask and the local caption)."""

    name = "imagenhub_mask"
    label = name
    hub_id = "ImagenHub/Mask_Guided_Image_Editing"
    needs_mask = True
