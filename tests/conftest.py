"""Shared fixtures: a folder dataset written by the test (including broken inputs) and config composition."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from PIL import Image

from editlab import ROOT

torch.set_num_threads(1)


def write_folder_dataset(root: Path, n_good: int = 3, broken: bool = True) -> Path:
    """Images with masks and prompts; with ``broken``, also a corrupt image, a wrong-sized mask,
    a sample without prompts (not applicable) and one with an empty target prompt."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n_good):
        img = np.zeros((64, 64, 3), np.uint8)
        img[:] = rng.integers(0, 255, 3, dtype=np.uint8)
        img[16:40, 20:44] = rng.integers(0, 255, 3, dtype=np.uint8)
        Image.fromarray(img).save(root / f"img{i}.png")
        mask = np.zeros((64, 64), np.uint8)
        mask[14:42, 18:46] = 255
        Image.fromarray(mask).save(root / f"mask{i}.png")
        rows.append({"id": f"good{i}", "image": f"img{i}.png", "mask": f"mask{i}.png",
                     "source_prompt": "a red square", "target_prompt": "a blue square",
                     "instruction": "make the square blue", "task_type": "color_change"})
    if broken:
        (root / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
        Image.fromarray(np.zeros((32, 32), np.uint8)).save(root / "small_mask.png")
        rows += [
            {"id": "corrupt", "image": "corrupt.png", "source_prompt": "a cat", "target_prompt": "a dog"},
            {"id": "wrong_mask", "image": "img0.png", "mask": "small_mask.png",
             "source_prompt": "a red square", "target_prompt": "a blue square"},
            {"id": "no_prompts", "image": "img1.png"},
            {"id": "empty_prompt", "image": "img1.png", "source_prompt": "a red square", "target_prompt": ""},
        ]
    (root / "samples.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return root


@pytest.fixture
def folder_dataset(tmp_path: Path) -> Path:
    return write_folder_dataset(tmp_path / "data")


def compose_cfg(overrides: list[str], return_hydra_config: bool = False):
    """Compose the editlab config as `editlab run` would, with the given overrides."""
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        return compose(config_name="config", overrides=overrides, return_hydra_config=return_hydra_config)


def toy_overrides(data: Path, results: Path, *extra: str) -> list[str]:
    return [
        "backbone=toy",
        "backbone.num_inference_steps=2",
        "dataset=folder",
        f"dataset.root={data}",
        f"results_dir={results}",
        "device=cpu",
        *extra,
    ]
