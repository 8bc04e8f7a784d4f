"""ShapesWorld oracle metrics: edit accuracy and preservation, read off the edited image by the oracle.

Defined only for ShapesWorld samples (which carry the attribute records of every object before and after
the edit); NaN elsewhere.
"""

from __future__ import annotations

import numpy as np
import torch

from editlab.metrics.base import EditBatch, EditMetric


def _as_uint8(images: torch.Tensor) -> np.ndarray:
    return (images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


class _OracleMetric(EditMetric):
    def _score(self, image: np.ndarray, meta: dict) -> float:
        raise NotImplementedError

    def per_sample(self, batch: EditBatch) -> torch.Tensor:
        images = _as_uint8(batch.edited)
        out = []
        for i in range(len(batch)):
            meta = batch.meta[i].get("shapesworld") if i < len(batch.meta) else None
            out.append(float("nan") if meta is None else self._score(images[i], meta))
        return torch.tensor(out, dtype=torch.float32)


class EditAccuracy(_OracleMetric):
    name = "edit_acc"
    definition = "ShapesWorld oracle: 1 if the requested attribute of the edited object has its target value"
    higher_is_better = True
    worst = 0.0

    def _score(self, image: np.ndarray, meta: dict) -> float:
        from editlab.datasets.shapesworld.oracle import edit_accuracy

        return float(edit_accuracy(image, meta))


class Preservation(_OracleMetric):
    name = "preservation"
    definition = "ShapesWorld oracle: fraction of the attributes that should not change which are unchanged"
    higher_is_better = True
    worst = 0.0

    def _score(self, image: np.ndarray, meta: dict) -> float:
        from editlab.datasets.shapesworld.oracle import preservation

        return float(preservation(image, meta))
