"""The pixel and feature similarities MagicBrush and Emu Edit report, and whole-frame preservation.

Definitions follow MagicBrush's ``evaluation/image_eval.py`` (OSU-NLP-Group/MagicBrush), which Emu Edit's paper
reports the same columns with (Emu Edit publishes no evaluation code):

- ``l1`` / ``l2``: ``nn.L1Loss`` / ``nn.MSELoss`` between the two images as [0, 1] tensors, i.e. the mean absolute /
  squared difference over every pixel and channel. MagicBrush compares the edit with the ground truth
  (``reference=target``: columns ``gt_l1``, ``gt_l2``); Emu Edit with the input image (``reference=source``).
- ``dino``: cosine similarity of DINO ViT-S/16 global features (``torch.hub`` ``facebookresearch/dino:main``
  ``dino_vits16``: the class token after the last norm), inputs resized (bicubic, shorter side 256), centre-cropped
  to 224 and ImageNet-normalised. A transformers ViT / DINOv2 folder (e.g. a copy of ``facebook/dino-vits16``) gives
  the same class token; offline, the ShapesWorld CLIP vision tower's pooled class token stands in, resized by the
  same 256/224 ratio to its input size and normalised with its own statistics. The column names the backbone:
  ``dino[dino_vits16]``, ``dino[sw-clip]``.
- ``clip_t``: cosine similarity of the CLIP embeddings of the edit and of the target caption (MagicBrush's CLIP-T;
  Emu Edit's CLIP_out with the output caption), not scaled or clipped as CLIP score is.
- ``src_psnr`` / ``src_ssim``: whole-frame PSNR / SSIM of the edit against the source: preservation for benchmarks
  without edit masks (``bg_*`` metrics cover masked ones).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torchmetrics.functional.image import structural_similarity_index_measure
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from editlab.files import model_weight_files
from editlab.metrics.base import EditBatch, EditMetric
from editlab.metrics.clip_score import DEFAULT_CLIP, _CLIPMetric
from editlab.metrics.fidelity import clipped_psnr
from editlab.metrics.structure import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    _load_dino_hub,
    _load_vision,
    _processor_stats,
    _resolve,
)

SHAPESWORLD_CLIP = "weights/shapesworld/clip"
REFERENCES = ("source", "target")


def model_tag(model: str) -> str:
    """Short name of a model for column names: ``sw-clip`` for editlab's ShapesWorld CLIP, else the hub name or
    folder name (``torchhub:dino_vits16`` -> ``dino_vits16``, ``openai/clip-vit-base-patch32`` ->
    ``clip-vit-base-patch32``)."""
    if Path(model).as_posix().rstrip("/").endswith(SHAPESWORLD_CLIP):
        return "sw-clip"
    return model.split(":", 1)[1] if model.startswith("torchhub:") else Path(model).name or model


def _reference(batch: EditBatch, reference: str) -> torch.Tensor | None:
    return batch.source if reference == "source" else batch.target


def _check_reference(reference: str) -> str:
    if reference not in REFERENCES:
        raise ValueError(f"reference must be one of {', '.join(REFERENCES)}, got {reference!r}")
    return reference


class PixelDistance(EditMetric):
    """Mean absolute (``kind=l1``) or squared (``kind=l2``) pixel difference in [0, 1] (MagicBrush's L1 / L2)."""

    higher_is_better = False
    worst = 1.0  # images in [0, 1]

    def __init__(self, kind: str = "l1", reference: str = "target", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if kind not in ("l1", "l2"):
            raise ValueError(f"kind must be l1 or l2, got {kind!r}")
        self.kind, self.reference = kind, _check_reference(reference)
        self.name = ("gt_" if reference == "target" else "") + kind
        what = "absolute" if kind == "l1" else "squared"
        self.definition = (f"mean {what} difference of the edit and the {reference} image over all pixels and "
                           f"channels, [0, 1] tensors (MagicBrush image_eval.py eval_distance); NaN without it")

    def per_sample(self, batch: EditBatch) -> torch.Tensor:
        ref = _reference(batch, self.reference)
        if ref is None:
            return torch.full((len(batch),), float("nan"))
        diff = batch.edited - ref
        return (diff.abs() if self.kind == "l1" else diff**2).flatten(1).mean(1)

    def extra_description(self) -> dict[str, Any]:
        return {"reference": self.reference}


class DINOSimilarity(EditMetric):
    """Cosine similarity of global (class-token) features, MagicBrush's DINO column."""

    higher_is_better = True
    worst = -1.0

    def __init__(self, backbone: str = SHAPESWORLD_CLIP, reference: str = "target", **kwargs: Any) -> None:
        """``backbone``: ``torchhub:dino_vits16`` (MagicBrush's, needs a local torch.hub checkout), a transformers
        ViT / DINOv2 / CLIP folder or hub id."""
        super().__init__(**kwargs)
        self.backbone_name, self.reference = backbone, _check_reference(reference)
        if backbone.startswith("torchhub:"):
            self.hub = _load_dino_hub(backbone.split(":", 1)[1]).model
            self.model, self.size, stats = None, 224, (IMAGENET_MEAN, IMAGENET_STD)
        else:
            self.hub = None
            self.model = _load_vision(backbone).eval()
            vision = self.model.vision_model if hasattr(self.model, "vision_model") else self.model
            self.size = int(vision.config.image_size)
            stats = _processor_stats(backbone)
        self.register_buffer("mean", torch.tensor(stats[0]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(stats[1]).view(1, 3, 1, 1), persistent=False)
        self.name = ("gt_" if reference == "target" else "") + f"dino[{model_tag(backbone)}]"
        self.definition = (f"cos of class-token features ({backbone}) of the edit and the {reference} image; bicubic "
                           f"resize of the shorter side to {round(self.size * 256 / 224)}, centre crop {self.size}, "
                           f"normalised (MagicBrush image_eval.py, DINO)")

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> MagicBrush's DINO transform at this backbone's input size."""
        x = TF.resize(images, round(self.size * 256 / 224), interpolation=InterpolationMode.BICUBIC, antialias=True)
        x = TF.center_crop(x, [self.size, self.size]).clamp(0, 1)
        return (x - self.mean) / self.std

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        x = self.preprocess(images)
        if self.hub is not None:
            return self.hub(x).float()
        if hasattr(self.model, "vision_model"):  # CLIP: the vision tower's pooled (post-layernorm) class token
            return self.model.vision_model(pixel_values=x).pooler_output.float()
        return self.model(pixel_values=x).last_hidden_state[:, 0].float()  # ViT / DINOv2: normed class token

    def per_sample(self, batch: EditBatch) -> torch.Tensor:
        ref = _reference(batch, self.reference)
        if ref is None:
            return torch.full((len(batch),), float("nan"))
        return F.cosine_similarity(self.features(batch.edited), self.features(ref), dim=-1)

    def extra_description(self) -> dict[str, Any]:
        return {"backbone": self.backbone_name, "reference": self.reference}

    def weight_files(self) -> list[Path]:
        if self.hub is not None:
            return sorted((Path(torch.hub.get_dir()) / "checkpoints").glob("dino_*.pth"))
        return model_weight_files(_resolve(self.backbone_name))


class CLIPTextSimilarity(_CLIPMetric):
    """CLIP-T: cosine of the CLIP embeddings of the edit and the target prompt (caption), unscaled."""

    higher_is_better = True
    worst = -1.0

    def __init__(self, model: str = DEFAULT_CLIP, **kwargs: Any) -> None:
        super().__init__(model=model, **kwargs)
        self.name = f"clip_t[{model_tag(model)}]"
        self.definition = (f"cos(CLIP image embedding of the edit, CLIP text embedding of the target caption) "
                           f"({model}; MagicBrush CLIP-T, Emu Edit CLIP_out); NaN without a target prompt")

    def per_sample(self, batch: EditBatch) -> torch.Tensor:
        out = torch.full((len(batch),), float("nan"))
        idx = [i for i, p in enumerate(batch.target_prompts) if p]
        if idx:
            out[idx] = (self.image_embeds(batch.edited[idx]) *
                        self.text_embeds([batch.target_prompts[i] for i in idx])).sum(-1)
        return out


class SourcePSNR(EditMetric):
    name = "src_psnr"
    definition = "whole-frame PSNR (data range 1) of the edit against the source; identical -> clipped to 100"
    higher_is_better = True
    worst = 0.0

    def per_sample(self, batch: EditBatch) -> torch.Tensor:
        return clipped_psnr(batch.edited, batch.source)


class SourceSSIM(EditMetric):
    name = "src_ssim"
    definition = "whole-frame torchmetrics SSIM (gaussian 11, sigma 1.5, data range 1) of the edit against the source"
    higher_is_better = True
    worst = -1.0

    def per_sample(self, batch: EditBatch) -> torch.Tensor:
        return structural_similarity_index_measure(batch.edited, batch.source, data_range=1.0, reduction="none")
