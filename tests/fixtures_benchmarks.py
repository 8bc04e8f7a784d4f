"""Fixture writers for GEdit-Bench, ImgEdit-Bench, KRIS-Bench, RISEBench and the Emu Edit test set, each in the
format its public release uses (see each loader's docstring); the hub datasets are written as parquet files with
Hugging Face ``Image`` cells ({bytes, path})."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from PIL import Image


def rgb(w: int, h: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    arr = np.zeros((h, w, 3), np.uint8)
    arr[:] = rng.integers(0, 255, 3, dtype=np.uint8)
    arr[h // 4: h // 2, w // 4: w // 2] = rng.integers(0, 255, 3, dtype=np.uint8)
    return Image.fromarray(arr)


def png_cell(image: Image.Image) -> dict:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return {"bytes": buf.getvalue(), "path": None}


def write_parquet(path: Path, rows: list[dict]) -> Path:
    import pandas as pd

    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(path)
    return path


GEDIT_ROWS = [  # (key, task_type, intersection)
    ("k001", "color_alter", True), ("k002", "subject-remove", False), ("k003", "text_change", True),
]


def gedit_rows() -> list[dict]:
    rows = []
    for lang in ("en", "cn"):
        for i, (key, task, inter) in enumerate(GEDIT_ROWS):
            rows.append({"task_type": task, "key": key, "instruction": f"{lang} instruction {key}",
                         "instruction_language": lang, "input_image": png_cell(rgb(48, 40, i)),
                         "input_image_raw": png_cell(rgb(96, 80, i)), "Intersection_exist": inter})
    return rows


def write_gedit(root: Path, rows: list[dict] | None = None) -> Path:
    """The hub dataset stepfun-ai/GEdit-Bench (one split, 'train') as parquet."""
    write_parquet(root / "data" / "train-00000-of-00001.parquet", rows or gedit_rows())
    return root


EMU_TASKS = ("background", "remove", "global")


def emu_rows(n: int, offset: int = 0) -> list[dict]:
    return [{"instruction": f"edit {i}", "image": png_cell(rgb(40, 40, i)), "task": EMU_TASKS[i % 3],
             "split": "test", "idx": offset + i, "hash": f"h{i}", "input_caption": f"a photo {i}",
             "output_caption": f"an edited photo {i}"} for i in range(n)]


def write_emu_edit(root: Path) -> Path:
    """facebook/emu_edit_test_set's files: data/validation-* (editlab's test) and data/test-* (editlab's validation)."""
    write_parquet(root / "data" / "validation-00000-of-00001.parquet", emu_rows(3))
    write_parquet(root / "data" / "test-00000-of-00001.parquet", emu_rows(4, offset=100))
    return root


IMGEDIT_BASIC = {
    "1082": {"id": "animal/000342021.jpg", "prompt": "Change the shell texture.", "edit_type": "adjust"},
    "673": {"id": "style/000278574.jpg", "prompt": "Make it ukiyo-e.", "edit_type": "style"},
    "97": {"id": "for_add/000236569.jpg", "prompt": "Add a chandelier.", "edit_type": "add"},
}
IMGEDIT_UGE = {"1": {"id": "000029784.jpg", "prompt": "Remove the lemon slice."},
               "2": {"id": "000065904.jpg", "prompt": "Remove the person."}}


def write_imgedit(root: Path) -> Path:
    """ImgEdit's Benchmark folder: Basic/basic_edit.json, UGE/UGE_edit.json, Benchmark/singleturn/, Benchmark/hard/."""
    for i, entry in enumerate(IMGEDIT_BASIC.values()):
        path = root / "Benchmark" / "singleturn" / entry["id"]
        path.parent.mkdir(parents=True, exist_ok=True)
        rgb(50, 40, i).save(path)
    for i, entry in enumerate(IMGEDIT_UGE.values()):
        path = root / "Benchmark" / "hard" / entry["id"]
        path.parent.mkdir(parents=True, exist_ok=True)
        rgb(40, 40, 10 + i).save(path)
    (root / "Basic").mkdir(parents=True, exist_ok=True)
    (root / "UGE").mkdir(parents=True, exist_ok=True)
    (root / "Basic" / "basic_edit.json").write_text(json.dumps(IMGEDIT_BASIC, indent=4))
    (root / "UGE" / "UGE_edit.json").write_text(json.dumps(IMGEDIT_UGE, indent=4))
    return root


KRIS = {
    "color_change": {"1": {"ori_img": "1.jpg", "gt_img": "", "ins_en": "Make the apple blue.", "explain_en": ""},
                     "2": {"ori_img": "2.png", "gt_img": "", "ins_en": "Make the car red.", "explain_en": ""}},
    "multi-element_composition": {"1": {"ori_img": ["1-1.jpg", "1-2.jpg", "1-3.jpg"], "gt_img": "",
                                        "ins_en": "Put the dog from the second image into the first.",
                                        "explain_en": ""}},
    "viewpoint_change": {"1": {"ori_img": "1.jpg", "gt_img": "1_gt.jpg", "ins_en": "Show it from above.",
                               "explain_en": "the top view"}},
}


def write_kris(root: Path) -> Path:
    """KRIS_Bench/<category>/annotation.json + images (the hub dataset Liang0223/KRIS_Bench)."""
    seed = 0
    for category, entries in KRIS.items():
        folder = root / "KRIS_Bench" / category
        folder.mkdir(parents=True, exist_ok=True)
        for entry in entries.values():
            names = entry["ori_img"] if isinstance(entry["ori_img"], list) else [entry["ori_img"]]
            for name in names + ([entry["gt_img"]] if entry["gt_img"] else []):
                seed += 1
                rgb(36 + seed, 40, seed).save(folder / name)
        (folder / "annotation.json").write_text(json.dumps(entries, indent=2))
    return root


RISE = [
    {"index": "temporal_reasoning_1", "category": "temporal_reasoning", "subtask": "Life Progression",
     "instruction": "Draw it a year later.", "image": "temporal_reasoning_images/1.png",
     "reference": "A rotten banana."},
    {"index": "logical_reasoning_1", "category": "logical_reasoning", "subtask": "Puzzle Solving",
     "instruction": "Draw the path in blue.", "image": "logical_reasoning_images/1.jpg",
     "reference_img": "logical_reasoning_images/1_ref.png"},
    {"index": "spatial_reasoning_1", "category": "spatial_reasoning", "instruction": "Assemble the parts.",
     "image": "spatial_reasoning_images/1.png", "reference": "A chair."},
]


def write_rise(root: Path, name: str = "datav2_total_w_subtask.json") -> Path:
    """RISEBench: the entry list (RISEBench-360's file name by default) beside its <category>_images folders."""
    for i, entry in enumerate(RISE):
        for key in ("image", "reference_img"):
            if entry.get(key):
                path = root / entry[key]
                path.parent.mkdir(parents=True, exist_ok=True)
                rgb(44, 44, 20 + i).save(path)
    root.mkdir(parents=True, exist_ok=True)
    (root / name).write_text(json.dumps(RISE, indent=2))
    return root


NEW_FIXTURE_WRITERS = {
    "gedit": write_gedit,
    "emu_edit": write_emu_edit,
    "imgedit": write_imgedit,
    "imgedit_uge": write_imgedit,
    "kris": write_kris,
    "rise": write_rise,
}
