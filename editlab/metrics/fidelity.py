"""Fidelity to the ground-truth target, where the dataset has one (ShapesWorld, MagicBrush): PSNR and SSIM of
the edit against the target image over the whole frame (torchmetrics, data range 1). NaN without a target.
LPIPS and CLIP-I against the target are ``LPIPSMetric(reference="target")`` and
``CLIPImageSimilarity(reference="target")``."""

from __future__ import annotations

import torch
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from editlab.metrics.base import EditBatch, EditMetric


def clipped_psnr(images: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR (data range 1) of ``images`` against ``references``, identical pairs clipped to 100."""
    psnr = peak_signal_noise_ratio(images, references, data_range=1.0, reduction="none", dim=(1, 2, 3))
    return psnr.clamp(max=100.0)


class TargetPSNR(EditMetric):
    name = "gt_psnr"
    definition = "PSNR (data range 1) of the edit against the ground-truth target; identical -> clipped to 100"
    higher_is_better = True
    worst = 0.0

    def per_sample(self, batch: EditBatch) -> torch.Tensor:
        if batch.target is None:
            return torch.full((len(batch),), float("nan"))
        return clipped_psnr(batch.edited, batch.target)


class TargetSSIM(EditMetric):
    name = "gt_ssim"
    definition = "torchmetrics SSIM (gaussian 11, sigma 1.5, data range 1) of the edit against the ground-truth target"
    higher_is_better = True
    worst = -1.0

    def per_sample(self, batch: EditBatch) -> torch.Tensor:
        if batch.target is None:
            return torch.full((len(batch),), float("nan"))
        return structural_similarity_index_measure(batch.edited, batch.target, data_range=1.0, reduction="none")
