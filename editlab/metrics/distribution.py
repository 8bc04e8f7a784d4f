"""Dataset-level metrics: FID and KID between the edited images and a reference set.

Both are torchmetrics' implementations (streaming feature sums and covariances for FID, so memory does not
grow with N) with a configurable feature extractor:

- ``inception``: torchmetrics' InceptionV3 (needs the ``torch-fidelity`` package and its weights);
- a CLIP folder (default: editlab's ShapesWorld CLIP, offline): L2-normalised projected image embeddings.

The reference set is the ground-truth targets when the dataset has them (``reference: target``), else the
source images. The column name says what computed it: feature extractor, resize mode and reference set, e.g.
``fid[sw-clip,bicubic-aa,vs-target]``. KID draws subsets of ``min(N, 1000)`` images (torchmetrics' default
size, capped by the run's size) unless ``kid_subset_size`` is given, which the name then carries
(``kid[...,subset=50]``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from editlab.files import model_weight_files
from editlab.metrics.base import EditBatch, MetricUnavailable, model_tag
from editlab.metrics.clip_score import _features, _resolve_clip, load_clip


class CLIPFeatures(torch.nn.Module):
    """Image -> L2-normalised CLIP image embedding; takes float images in [0, 1] of any size."""

    def __init__(self, model: str) -> None:
        super().__init__()
        clip, processor, _ = load_clip(model)
        self.clip = clip
        size = processor.image_processor.crop_size
        self.size = (int(size["height"]), int(size["width"]))
        self.register_buffer("mean", torch.tensor(processor.image_processor.image_mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(processor.image_processor.image_std).view(1, 3, 1, 1))
        self.num_features = int(clip.config.projection_dim)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
        x = F.interpolate(x, size=self.size, mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)
        feats = _features(self.clip.get_image_features(pixel_values=(x - self.mean) / self.std))
        return F.normalize(feats.float(), dim=-1)


def _extractor(feature: str) -> tuple[Any, str, str]:
    """(torchmetrics feature argument, model tag, resize mode) of ``feature``."""
    if feature == "inception":
        try:
            FrechetInceptionDistance(feature=2048)
        except Exception as err:
            raise MetricUnavailable(
                f"Inception features need the torch-fidelity package and its InceptionV3 weights ({err}); offline, "
                "use feature=weights/shapesworld/clip"
            ) from err
        return 2048, "inception", "fidelity-bilinear299"
    return CLIPFeatures(feature), model_tag(feature), "bicubic-aa"


class DistributionMetric:
    """FID or KID over a whole run; ``update`` per batch, ``compute`` once. Not a per-sample metric."""

    definition = "FID or KID (torchmetrics) between the edits and the targets (or sources), over the whole run"
    higher_is_better = False
    per_sample_metric = False
    mode = "clean"
    scale = 1.0
    version = "2"

    #: torchmetrics' default KID subset size; a run of N < 1000 images uses N.
    KID_SUBSET = 1000

    def __init__(self, kind: str = "fid", feature: str = "weights/shapesworld/clip", reference: str = "target",
                 kid_subset_size: int | None = None) -> None:
        """``kind``: fid | kid; ``feature``: inception or a CLIP folder; ``reference``: target | source;
        ``kid_subset_size``: None = min(N, 1000), else that size (named in the column)."""
        if kind not in ("fid", "kid"):
            raise ValueError(f"unknown kind '{kind}', available: fid, kid")
        if reference not in ("target", "source"):
            raise ValueError(f"reference must be target or source, got '{reference}'")
        extractor, tag, resize = _extractor(feature)
        self.kind, self.feature, self.reference, self.kid_subset_size = kind, feature, reference, kid_subset_size
        self.resize = resize
        subset = f",subset={kid_subset_size}" if kind == "kid" and kid_subset_size is not None else ""
        self.name = f"{kind}[{tag},{resize},vs-{reference}{subset}]"
        self.definition = (
            f"torchmetrics {kind.upper()} between edited images and the {reference} images (source images when a "
            f"sample has no target), features: {feature}, resized {resize}"
            + (f", subsets of {kid_subset_size if kid_subset_size is not None else 'min(N, 1000)'} images"
               if kind == "kid" else "")
        )
        if kind == "fid":
            self.metric = FrechetInceptionDistance(feature=extractor, normalize=True)
        else:
            self.metric = KernelInceptionDistance(feature=extractor, normalize=True,
                                                  subset_size=kid_subset_size or self.KID_SUBSET)
        self.n = 0

    def reset(self) -> None:
        self.metric.reset()
        self.n = 0

    def update(self, batch: EditBatch) -> None:
        ref = batch.target if self.reference == "target" and batch.target is not None else batch.source
        self.metric.update(ref, real=True)
        self.metric.update(batch.edited, real=False)
        self.n += len(batch)

    def compute(self) -> dict[str, float]:
        """``{"value", "std", "n"}`` (std only for KID, over its subsets); NaN with fewer than 2 images."""
        n = self.n
        if n < 2:
            return {"value": float("nan"), "std": float("nan"), "n": n}
        if self.kind == "kid":
            subset = min(self.kid_subset_size or self.KID_SUBSET, n)
            if self.kid_subset_size is not None and self.kid_subset_size > n:
                return {"value": float("nan"), "std": float("nan"), "n": n,
                        "error": f"KID subset size {self.kid_subset_size} exceeds the {n} images of this run"}
            self.metric.subset_size = subset
        with torch.random.fork_rng():  # KID draws random subsets: seed them so reruns give identical values
            torch.manual_seed(0)
            out = self.metric.compute()
        if self.kind == "kid":
            return {"value": float(out[0]), "std": float(out[1]), "n": n, "subset_size": subset}
        return {"value": float(out), "std": float("nan"), "n": n}

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "class": f"{type(self).__module__}.{type(self).__name__}",
                "definition": self.definition, "version": self.version, "mode": self.mode, "scale": self.scale,
                "higher_is_better": False, "backbone": self.feature, "resize": self.resize,
                "reference": self.reference, "kid_subset_size": self.kid_subset_size, "per_sample": False}

    def weight_files(self) -> list[Path]:
        return [] if self.feature == "inception" else model_weight_files(_resolve_clip(self.feature))
