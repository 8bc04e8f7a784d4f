"""Background preservation: PSNR, MSE and SSIM outside the edit mask (editlab's ``clean`` definitions).

Pixels where the mask is 0 are the background. MSE and PSNR average over background pixels only; SSIM
averages torchmetrics' full SSIM map (Gaussian window 11, sigma 1.5) over background pixels. Images are in
[0, 1] (PSNR data range 1). A sample without a mask, or whose mask covers the whole image, gets NaN.
"""

from __future__ import annotations

import torch
from torchmetrics.functional.image import structural_similarity_index_measure

from editlab.metrics.base import EditBatch, EditMetric


def _background(batch: EditBatch) -> torch.Tensor | None:
    if batch.mask is None:
        return None
    return (batch.mask < 0.5).float()


def background_mse(edited: torch.Tensor, source: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Mean squared error over pixels where ``keep`` is 1; (B,) with NaN where nothing is kept."""
    sq = ((edited - source) ** 2) * keep
    n = keep.sum(dim=(1, 2, 3)) * edited.shape[1]
    return torch.where(n > 0, sq.sum(dim=(1, 2, 3)) / n.clamp(min=1), torch.full_like(n, float("nan")))


class BackgroundMSE(EditMetric):
    name = "bg_mse"
    definition = "mean squared error (images in [0,1]) over pixels outside the edit mask"
    higher_is_better = False
    worst = 1.0

    def per_sample(self, batch: EditBatch) -> torch.Tensor:
        keep = _background(batch)
        if keep is None:
            return torch.full((len(batch),), float("nan"))
        return background_mse(batch.edited, batch.source, keep)


class BackgroundPSNR(EditMetric):
    name = "bg_psnr"
    definition = "10*log10(1/MSE) over pixels outside the edit mask (data range 1); identical -> +inf clipped to 100"
    higher_is_better = True
    worst = 0.0

    def per_sample(self, batch: EditBatch) -> torch.Tensor:
        keep = _background(batch)
        if keep is None:
            return torch.full((len(batch),), float("nan"))
        mse = background_mse(batch.edited, batch.source, keep)
        return (10 * torch.log10(1.0 / mse.clamp(min=1e-10))).clamp(max=100.0)


class BackgroundSSIM(EditMetric):
    name = "bg_ssim"
    definition = "torchmetrics SSIM map (gaussian 11, sigma 1.5, data range 1) averaged over pixels outside the mask"
    higher_is_better = True
    worst = -1.0

    def per_sample(self, batch: EditBatch) -> torch.Tensor:
        keep = _background(batch)
        if keep is None:
            return torch.full((len(batch),), float("nan"))
        _, ssim_map = structural_similarity_index_measure(
            batch.edited, batch.source, data_range=1.0, return_full_image=True
        )
        keep3 = keep.expand_as(ssim_map)
        n = keep3.sum(dim=(1, 2, 3))
        mean = (ssim_map * keep3).sum(dim=(1, 2, 3)) / n.clamp(min=1)
        return torch.where(n > 0, mean, torch.full_like(n, float("nan")))
