"""Structure distance (Tumanyan et al., "Splicing ViT Features", 2022; PIE-Bench's "structure distance").

The structure of an image is summarised by the self-similarity of a ViT's last-block attention *keys*: the
cosine-similarity matrix between all tokens (CLS included) with the heads concatenated. The distance between
two images is the MSE between their matrices. PIE-Bench uses DINO ViT-B/8 (``torch.hub``
``facebookresearch/dino:main``, ``dino_vitb8``) at 224 px. Offline, editlab's ShapesWorld CLIP vision tower (or
any transformers CLIP / ViT model) serves as the backbone; the backbone is part of the metric's recorded name.

Preprocessing modes:

- ``clean``: images in [0, 1] resized to the backbone's input size and normalised with its own mean/std.
- ``pie``: PIE-Bench's evaluate.py quirk (cure-lab/PnPInversion ``evaluation/matrics_calculator.py``,
  ``LossG.global_transform``): pixel values left in 0-255, resized with torchvision's ``Resize(224,
  max_size=480)`` (shorter side 224, bilinear) *without antialiasing*, as torchvision resized tensors before
  0.17 and PIE-Bench's environment did, then ImageNet normalisation applied to those 0-255 values.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from editlab import ROOT
from editlab.files import model_weight_files
from editlab.metrics.base import EditBatch, EditMetric, MetricUnavailable, model_tag

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def keys_self_similarity(keys: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """(B, T, D) keys with heads concatenated -> (B, T, T) cosine self-similarity (PIE's attn_cosine_sim)."""
    norm = keys.norm(dim=2, keepdim=True)
    factor = (norm @ norm.transpose(1, 2)).clamp(min=eps)
    return (keys @ keys.transpose(1, 2)) / factor


class _KeyExtractor:
    """Forward hook on the last block's key projection of a transformers CLIP or ViT vision model."""

    def __init__(self, model: Any) -> None:
        self.model = model.eval()
        self.vision = model.vision_model if hasattr(model, "vision_model") else model  # CLIP: the vision tower
        keys = [m for n, m in self.vision.named_modules() if n.endswith(("k_proj", "attention.key"))]
        if not keys:
            raise ValueError(f"unsupported vision backbone {type(model).__name__}: no attention key projection found")
        self.layer = keys[-1]  # the last block's keys
        config = getattr(self.vision, "config", model.config)
        self.image_size = int(config.image_size)

    @torch.no_grad()
    def keys(self, pixel_values: torch.Tensor) -> torch.Tensor:
        captured: list[torch.Tensor] = []
        handle = self.layer.register_forward_hook(lambda _m, _i, out: captured.append(out))
        try:
            self.vision(pixel_values=pixel_values)
        finally:
            handle.remove()
        return captured[0].float()


class _DinoHubExtractor:
    """DINO from a local torch.hub checkout (``facebookresearch/dino:main``): keys from the last block's qkv."""

    def __init__(self, model: Any) -> None:
        self.model = model.eval()
        self.image_size = 224
        self.heads = model.blocks[-1].attn.num_heads

    @torch.no_grad()
    def keys(self, pixel_values: torch.Tensor) -> torch.Tensor:
        captured: list[torch.Tensor] = []
        handle = self.model.blocks[-1].attn.qkv.register_forward_hook(lambda _m, _i, out: captured.append(out))
        try:
            self.model(pixel_values)
        finally:
            handle.remove()
        qkv = captured[0]
        b, t, three_d = qkv.shape
        d = three_d // 3
        k = qkv.reshape(b, t, 3, self.heads, d // self.heads)[:, :, 1]  # (B, T, heads, d/heads)
        return k.reshape(b, t, d).float()


def _load_dino_hub(name: str) -> _DinoHubExtractor:
    repo = Path(torch.hub.get_dir()) / "facebookresearch_dino_main"
    if not repo.exists():
        raise MetricUnavailable(
            f"DINO '{name}' needs a local torch.hub checkout at {repo} with its weights in "
            f"{Path(torch.hub.get_dir()) / 'checkpoints'}; run torch.hub.load('facebookresearch/dino:main', '{name}') "
            "once online, or use backbone=weights/shapesworld/clip offline"
        )
    return _DinoHubExtractor(torch.hub.load(str(repo), name, source="local"))


class StructureDistance(EditMetric):
    """MSE between the keys' self-similarity matrices of the edit and the source (lower = structure kept)."""

    definition = "MSE between last-block ViT key self-similarity matrices of the edit and the source"
    higher_is_better = False

    def __init__(self, backbone: str = "weights/shapesworld/clip", mode: str = "clean", **kwargs: Any) -> None:
        """``backbone``: a transformers CLIP/ViT folder or hub id, or ``torchhub:dino_vitb8`` (PIE-Bench's)."""
        super().__init__(**kwargs)
        if mode not in ("clean", "pie"):
            raise ValueError(f"unknown mode '{mode}', available: clean, pie")
        self.mode = mode
        self.backbone_name = backbone
        if backbone.startswith("torchhub:"):
            self.extractor = _load_dino_hub(backbone.split(":", 1)[1])
        else:
            self.extractor = _KeyExtractor(_load_vision(backbone))
        self.name = f"structure_dist[{model_tag(backbone)}]"
        self.definition = (
            f"MSE between cosine self-similarity matrices of last-block ViT keys ({backbone}), {mode} preprocessing"
        )
        processor_mean, processor_std = _processor_stats(backbone)
        stats = (IMAGENET_MEAN, IMAGENET_STD) if mode == "pie" else (processor_mean, processor_std)
        self.register_buffer("mean", torch.tensor(stats[0]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(stats[1]).view(1, 3, 1, 1), persistent=False)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> backbone input following the mode."""
        size = self.extractor.image_size
        if self.mode == "pie":
            from torchvision.transforms.functional import InterpolationMode, resize

            x = resize(images * 255.0, [size], interpolation=InterpolationMode.BILINEAR, max_size=480, antialias=False)
        else:
            x = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        return (x - self.mean) / self.std

    def per_sample(self, batch: EditBatch) -> torch.Tensor:
        sim_edit = keys_self_similarity(self.extractor.keys(self.preprocess(batch.edited)))
        sim_src = keys_self_similarity(self.extractor.keys(self.preprocess(batch.source)))
        return ((sim_edit - sim_src) ** 2).flatten(1).mean(1)

    def extra_description(self) -> dict[str, Any]:
        return {"backbone": self.backbone_name, "mode": self.mode}

    def weight_files(self) -> list[Path]:
        if self.backbone_name.startswith("torchhub:"):
            return sorted((Path(torch.hub.get_dir()) / "checkpoints").glob("dino_*.pth"))
        return model_weight_files(_resolve(self.backbone_name))


def _resolve(path: str) -> str:
    p = Path(path)
    return str(ROOT / p) if not p.is_absolute() and (ROOT / p).exists() else path


def _load_vision(backbone: str) -> Any:
    from transformers import AutoConfig, CLIPModel, ViTModel

    source = _resolve(backbone)
    try:
        config = AutoConfig.from_pretrained(source)
        cls = CLIPModel if config.model_type == "clip" else ViTModel
        return cls.from_pretrained(source)
    except Exception as err:
        raise MetricUnavailable(
            f"structure-distance backbone '{backbone}' could not be loaded ({type(err).__name__}: {err}). Offline, "
            "use editlab's ShapesWorld CLIP (weights/shapesworld/clip) or a local DINO/ViT folder "
            "(e.g. a copy of facebook/dino-vitb8)."
        ) from err


def _processor_stats(backbone: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    from transformers import AutoImageProcessor

    if backbone.startswith("torchhub:"):
        return IMAGENET_MEAN, IMAGENET_STD
    try:
        proc = AutoImageProcessor.from_pretrained(_resolve(backbone))
        return tuple(proc.image_mean), tuple(proc.image_std)
    except Exception:
        return IMAGENET_MEAN, IMAGENET_STD
