"""The metric interface.

Every editlab metric is a torchmetrics :class:`~torchmetrics.Metric`. ``update`` takes an
:class:`EditBatch` and appends one value per sample to the ``values`` state (``NaN`` where the metric is
undefined for a sample, e.g. a background metric on a sample without a mask); ``compute`` returns the
mean over the defined values. Per-sample values are what editlab stores with every sample record, so
tables can report spread, confidence intervals and paired tests, not only means.
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torchmetrics import Metric


class MetricUnavailable(RuntimeError):
    """A metric cannot be built here (its weights are missing); it is skipped and the reason recorded."""


#: Short tags of well-known models, used in column names (``clip_score[vit-l14]``); other models are tagged by
#: their folder or hub-id basename.
MODEL_TAGS = {
    "weights/shapesworld/clip": "sw-clip",
    "openai/clip-vit-large-patch14": "vit-l14",
    "openai/clip-vit-base-patch32": "vit-b32",
    "openai/clip-vit-base-patch16": "vit-b16",
    "laion/CLIP-ViT-H-14-laion2B-s32B-b79K": "vit-h14-laion2b",
    "torchhub:dino_vitb8": "dino_vitb8",
    "torchhub:dino_vits8": "dino_vits8",
    "torchhub:dino_vitb16": "dino_vitb16",
    "facebook/dino-vitb8": "dino-vitb8",
    "facebook/dino-vits16": "dino-vits16",
    "inception": "inception",
}


def model_tag(model: str) -> str:
    """The tag a column name carries for ``model`` (a folder, hub id or ``torchhub:NAME``)."""
    key = str(model).rstrip("/")
    if key in MODEL_TAGS:
        return MODEL_TAGS[key]
    for known, tag in MODEL_TAGS.items():  # an absolute path to a known folder, e.g. <repo>/weights/shapesworld/clip
        if "/" in known and key.endswith("/" + known):
            return tag
    if key.startswith("torchhub:"):
        return key.split(":", 1)[1]
    return Path(key).name or key


@dataclass
class EditBatch:
    """What metrics see. Images are float tensors (B, 3, H, W) in [0, 1]; ``mask`` is (B, 1, H, W) in {0, 1}
    with 1 marking the edit region; prompt lists have length B."""

    edited: torch.Tensor
    source: torch.Tensor
    source_prompts: list[str | None]
    target_prompts: list[str | None]
    mask: torch.Tensor | None = None
    target: torch.Tensor | None = None
    meta: list[dict[str, Any]] = field(default_factory=list)
    #: The sample's instruction and task type (None where it has none), and the dataset's source image as loaded
    #: (its own size, before the working resolution): for metrics that must see what a benchmark's scorer sees.
    instructions: list[str | None] = field(default_factory=list)
    task_types: list[str | None] = field(default_factory=list)
    source_images: list[Image.Image] = field(default_factory=list)

    def __len__(self) -> int:
        return self.edited.shape[0]


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB view of any PIL image: transparency composited on white, 16-bit scaled to 8-bit, L/CMYK/P converted."""
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(image, dtype=np.float64)
        top = 65535.0 if arr.max() > 255 else 255.0
        return Image.fromarray((arr / top * 255).round().astype(np.uint8)).convert("RGB")
    return image.convert("RGB")


def pil_to_unit(image: Image.Image) -> torch.Tensor:
    """PIL image -> (3, H, W) float32 in [0, 1], converted with :func:`to_rgb`."""
    arr = np.asarray(to_rgb(image), dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float() / 255.0


def mask_to_unit(mask: Image.Image) -> torch.Tensor:
    """PIL mask -> (1, H, W) float32 in {0, 1} (any non-zero pixel is inside)."""
    arr = np.asarray(mask.convert("L")) > 0
    return torch.from_numpy(arr).float().unsqueeze(0)


@dataclass
class SampleScores:
    """What a multi-column metric returns for one sample: values per column (None: no value), a specific message
    per failed column, and per-column payload kept in the sample's record under ``judgements`` (e.g. a judge's
    raw replies)."""

    values: dict[str, float | None] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    payload: dict[str, Any] = field(default_factory=dict)
    #: True when a failure may pass on its own (e.g. the judge server was down): the next run scores it again.
    retry: bool = False


class EditMetric(Metric):
    """Base class: subclasses implement :meth:`per_sample`."""

    #: Column name in tables and records.
    name: str = "metric"
    #: Short human-readable definition, recorded with every result.
    definition: str = ""
    version: str = "1"
    #: ``clean`` (editlab's documented definitions) or ``pie`` (PIE-Bench's evaluate.py, quirks included).
    mode: str = "clean"
    #: Tables print ``value * scale`` (PIE-Bench prints structure x10^3, LPIPS x10^3, MSE x10^4, SSIM x10^2).
    scale: float = 1.0
    higher_is_better: bool = True
    #: The metric's worst possible value (what a failed edit scores under ``report.failures=worst``); ``None``
    #: when unbounded (then the worst value observed in the comparison is used, and the table says so).
    worst: float | None = None
    is_differentiable = False
    full_state_update = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("values", default=[], dist_reduce_fx="cat")

    @abstractmethod
    def per_sample(self, batch: EditBatch) -> torch.Tensor:
        """One value per sample, shape (B,), NaN where undefined."""

    def update(self, batch: EditBatch) -> None:
        self.values.append(self.per_sample(batch).detach().float().flatten().cpu())

    def compute(self) -> torch.Tensor:
        vals = torch.cat(self.values) if self.values else torch.zeros(0)
        vals = vals[~torch.isnan(vals)]
        return vals.mean() if vals.numel() else torch.tensor(float("nan"))

    def describe(self) -> dict[str, Any]:
        """Everything needed to reproduce this column: name, definition, version, backbone."""
        return {
            "name": self.name,
            "class": f"{type(self).__module__}.{type(self).__name__}",
            "definition": self.definition,
            "version": self.version,
            "mode": self.mode,
            "scale": self.scale,
            "higher_is_better": self.higher_is_better,
            "worst": self.worst,
            **self.extra_description(),
        }

    def extra_description(self) -> dict[str, Any]:
        return {}

    def weight_files(self) -> list[Path]:
        """Local weight files this metric computes with (their hashes are recorded with the results)."""
        return []

    #: Multi-column metrics (e.g. a judge protocol) set this and implement :meth:`score_samples`; the runner then
    #: stores each sample's :class:`SampleScores` instead of one ``per_sample`` value under ``name``.
    multi_column: bool = False

    def score_samples(self, batch: EditBatch) -> list[SampleScores]:
        """One :class:`SampleScores` per sample (multi-column metrics only)."""
        raise NotImplementedError

    def column_definitions(self) -> dict[str, dict[str, Any]]:
        """The definition of every column this metric writes (results.json ``metric_definitions``)."""
        return {self.name: self.describe()}
