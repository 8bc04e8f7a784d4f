"""CLIP score of the edited image against the target prompt.

torchmetrics ``CLIPScore`` semantics: ``100 * max(cos(E_img(edited), E_txt(target prompt)), 0)`` with a
transformers ``CLIPModel`` and its processor. The default model is the CLIP-format model editlab trains on
ShapesWorld (offline); any CLIP checkpoint folder or hub id works (``openai/clip-vit-large-patch14`` is what
PIE-Bench uses). The model path is part of the recorded metric description.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from editlab import ROOT
from editlab.metrics.base import EditBatch, EditMetric, MetricUnavailable

DEFAULT_CLIP = "weights/shapesworld/clip"


def _features(output: Any) -> torch.Tensor:
    """transformers returns a tensor or a model output holding the projected embeddings."""
    if isinstance(output, torch.Tensor):
        return output
    return output.pooler_output


def load_clip(model: str) -> tuple[Any, Any, str]:
    """Load ``CLIPModel`` + ``CLIPProcessor`` from a folder (relative to the repo root allowed) or hub id."""
    from transformers import CLIPModel, CLIPProcessor

    path = Path(model)
    source = str(ROOT / path) if not path.is_absolute() and (ROOT / path).exists() else model
    try:
        clip = CLIPModel.from_pretrained(source).eval()
        processor = CLIPProcessor.from_pretrained(source)
    except Exception as err:
        raise MetricUnavailable(
            f"CLIP model '{model}' could not be loaded ({type(err).__name__}: {err}). Offline, use editlab's "
            f"ShapesWorld CLIP ({DEFAULT_CLIP}, trained with `editlab train clip`) or a local CLIP folder."
        ) from err
    return clip, processor, source


class CLIPScoreMetric(EditMetric):
    name = "clip_score"
    definition = "100 * max(cos(CLIP image embedding of the edit, CLIP text embedding of the target prompt), 0)"
    higher_is_better = True

    def __init__(self, model: str = DEFAULT_CLIP, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.model_name = model
        self.clip, self.processor, self.source = load_clip(model)

    @torch.no_grad()
    def image_embeds(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> L2-normalised image embeddings."""
        pixels = (images.clamp(0, 1) * 255).round().to(torch.uint8).cpu()
        inputs = self.processor(images=list(pixels), return_tensors="pt")
        feats = _features(self.clip.get_image_features(pixel_values=inputs["pixel_values"]))
        return torch.nn.functional.normalize(feats.float(), dim=-1)

    @torch.no_grad()
    def text_embeds(self, prompts: list[str]) -> torch.Tensor:
        inputs = self.processor(text=prompts, return_tensors="pt", padding=True, truncation=True)
        feats = _features(self.clip.get_text_features(input_ids=inputs["input_ids"],
                                                      attention_mask=inputs["attention_mask"]))
        return torch.nn.functional.normalize(feats.float(), dim=-1)

    def per_sample(self, batch: EditBatch) -> torch.Tensor:
        out = torch.full((len(batch),), float("nan"))
        idx = [i for i, p in enumerate(batch.target_prompts) if p]
        if not idx:
            return out
        img = self.image_embeds(batch.edited[idx])
        txt = self.text_embeds([batch.target_prompts[i] for i in idx])
        out[idx] = 100 * (img * txt).sum(-1).clamp(min=0)
        return out

    def extra_description(self) -> dict[str, Any]:
        return {"backbone": self.model_name}
