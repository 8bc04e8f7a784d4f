"""PIE-Bench's metrics exactly as its evaluate.py computes them (Ju et al., 2024, PnPInversion repository).

The quirks that matter for reproducing its Table 1, each a deliberate part of this mode:

- the edit mask has its one-pixel image border forced to 1 (treated as edited) "to avoid annotation errors";
- "unedited part" metrics are computed over the *full frame* after multiplying both images by (1 - mask), so
  the zero-filled edit region counts in the average; NaN when nothing is unedited, excluded from the mean;
- LPIPS uses the squeeze backbone; CLIP is ViT-L/14 with bracket marks stripped from prompts; the "edited"
  CLIP score multiplies the uint8 edit by the mask;
- structure distance runs DINO ViT-B/8 on 0-255 pixel values (ImageNet-normalised after resizing to 224);
- the paper prints structure x10^3, LPIPS x10^3, MSE x10^4, SSIM x10^2 (``scale`` of each metric).

All inputs are the runner's [0, 1] tensors; PSNR, MSE and SSIM use torchmetrics as PIE-Bench does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from editlab.metrics.base import EditBatch, EditMetric
from editlab.metrics.clip_score import CLIPEditedRegion, CLIPScoreMetric
from editlab.metrics.lpips_metric import LPIPSMetric
from editlab.metrics.structure import StructureDistance

PIE_CLIP = "openai/clip-vit-large-patch14"


def pie_mask(mask: torch.Tensor) -> torch.Tensor:
    """Binary (B, 1, H, W) mask with the image border forced to 1, as PIE-Bench's ``mask_decode`` does."""
    m = (mask > 0.5).float().clone()
    m[..., 0, :] = 1
    m[..., -1, :] = 1
    m[..., :, 0] = 1
    m[..., :, -1] = 1
    return m


class _PIEUnedited(EditMetric):
    """Base: both images x (1 - mask) over the full frame; NaN where the unedited part is empty."""

    mode = "pie"

    def _score(self, edited: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def per_sample(self, batch: EditBatch) -> torch.Tensor:
        out = torch.full((len(batch),), float("nan"))
        if batch.mask is None:
            return out
        keep = 1 - pie_mask(batch.mask)
        valid = keep.flatten(1).sum(1) > 0
        if valid.any():
            out[valid] = self._score(batch.edited[valid] * keep[valid], batch.source[valid] * keep[valid]).float()
        return out


class PIEPSNR(_PIEUnedited):
    name = "pie_psnr_unedit"
    definition = "PIE-Bench psnr_unedit_part: torchmetrics PSNR (data range 1) of both images x (1 - mask), full frame"
    higher_is_better = True
    worst = 0.0

    def _score(self, edited: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        return peak_signal_noise_ratio(edited, source, data_range=1.0, reduction="none", dim=(1, 2, 3))


class PIEMSE(_PIEUnedited):
    name = "pie_mse_unedit"
    definition = "PIE-Bench mse_unedit_part: mean squared error of both images x (1 - mask) over the full frame"
    higher_is_better = False
    worst = 1.0
    scale = 1e4

    def _score(self, edited: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        return ((edited - source) ** 2).flatten(1).mean(1)


class PIESSIM(_PIEUnedited):
    """SSIM as PIE-Bench's numbers were made: torchmetrics' SSIM map (Gaussian 11x11, sigma 1.5, reflect padding)
    averaged after cropping 5 px from every side, as torchmetrics did until its change of September 2024
    (v1.5 averages the whole map). The crop is done here, so the value does not depend on the installed version.
    """

    name = "pie_ssim_unedit"
    definition = ("PIE-Bench ssim_unedit_part: SSIM (data range 1, Gaussian 11/1.5) map of both images x (1 - mask), "
                  "averaged over the frame cropped by 5 px (torchmetrics < 1.5 semantics)")
    higher_is_better = True
    worst = -1.0
    scale = 1e2
    version = "2"
    crop = 5  # (kernel_size - 1) // 2 of the 11x11 window

    def _score(self, edited: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        _, full = structural_similarity_index_measure(edited, source, data_range=1.0, reduction="none",
                                                      return_full_image=True)
        c = self.crop
        return full[..., c:-c, c:-c].flatten(1).mean(1)


class PIELPIPS(_PIEUnedited):
    name = "pie_lpips_unedit"
    definition = "PIE-Bench lpips_unedit_part: LPIPS (squeeze) of both images x (1 - mask), full frame"
    higher_is_better = False
    scale = 1e3

    def __init__(self, net: str = "squeeze", allow_random_backbone: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.lpips = LPIPSMetric(net=net, allow_random_backbone=allow_random_backbone)
        self.name = f"pie_lpips_unedit[{net}{'-randbackbone' if self.lpips.random_backbone else ''}]"
        self.definition = f"PIE-Bench lpips_unedit_part: {self.lpips.definition}, both images x (1 - mask)"

    @torch.no_grad()
    def _score(self, edited: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        return self.lpips.model(edited * 2 - 1, source * 2 - 1).flatten()

    def weight_files(self) -> list[Path]:
        return self.lpips.weight_files()


class PIECLIPWhole(CLIPScoreMetric):
    name = "pie_clip_whole"
    mode = "pie"
    definition = "PIE-Bench clip_similarity_target_image: CLIPScore(edit, target prompt without brackets)"

    def __init__(self, model: str = PIE_CLIP, **kwargs: Any) -> None:
        super().__init__(model=model, **kwargs)


class PIECLIPEdited(CLIPEditedRegion):
    name = "pie_clip_edited"
    mode = "pie"
    definition = "PIE-Bench clip_similarity_target_image_edit_part: CLIPScore(uint8(edit x mask), target prompt)"

    def __init__(self, model: str = PIE_CLIP, **kwargs: Any) -> None:
        super().__init__(model=model, **kwargs)

    def _images(self, batch: EditBatch) -> torch.Tensor | None:
        return None if batch.mask is None else batch.edited * pie_mask(batch.mask)

    def per_sample(self, batch: EditBatch) -> torch.Tensor:
        # PIE's ``tgt_mask.sum() == 0`` test never fires: its mask_decode sets the image border, so an empty
        # annotated mask is scored (on the border pixels), not NaN as editlab's clean ``clip_edited`` does.
        return CLIPScoreMetric.per_sample(self, batch)


class PIEStructure(StructureDistance):
    definition = ("PIE-Bench structure_distance: DINO ViT-B/8 last-block key self-similarity MSE, 0-255 input, "
                  "resized to 224 without antialiasing")
    mode = "pie"
    scale = 1e3
    version = "2"

    def __init__(self, backbone: str = "torchhub:dino_vitb8", **kwargs: Any) -> None:
        super().__init__(backbone=backbone, mode="pie", **kwargs)
        self.name = "pie_" + self.name
