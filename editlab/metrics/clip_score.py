"""CLIP-based metrics: CLIP score (whole image and edited region), directional similarity, image similarity.

CLIP score follows torchmetrics ``CLIPScore`` semantics: ``100 * max(cos(E_img(image), E_txt(prompt)), 0)`` with
a transformers ``CLIPModel`` and its processor. The default model is the CLIP-format model editlab trains on
ShapesWorld (offline); any CLIP checkpoint folder or hub id works (``openai/clip-vit-large-patch14`` is what
PIE-Bench uses). The model path is part of every recorded metric description. A model is loaded once per
process and shared by all CLIP metrics.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import torch

from editlab import ROOT
from editlab.files import model_weight_files
from editlab.metrics.base import EditBatch, EditMetric, MetricUnavailable, model_tag

DEFAULT_CLIP = "weights/shapesworld/clip"


def _features(output: Any) -> torch.Tensor:
    """transformers returns a tensor or a model output holding the projected embeddings."""
    if isinstance(output, torch.Tensor):
        return output
    return output.pooler_output


def _resolve_clip(model: str) -> str:
    """A folder relative to the repository root, or the model string as given (hub id, absolute path)."""
    path = Path(model)
    return str(ROOT / path) if not path.is_absolute() and (ROOT / path).exists() else model


@functools.lru_cache(maxsize=4)
def load_clip(model: str) -> tuple[Any, Any, str]:
    """Load ``CLIPModel`` + ``CLIPProcessor`` from a folder (relative to the repo root allowed) or hub id."""
    from transformers import CLIPModel, CLIPProcessor

    source = _resolve_clip(model)
    try:
        clip = CLIPModel.from_pretrained(source).eval()
        processor = CLIPProcessor.from_pretrained(source)
    except Exception as err:
        raise MetricUnavailable(
            f"CLIP model '{model}' could not be loaded ({type(err).__name__}: {err}). Offline, use editlab's "
            f"ShapesWorld CLIP ({DEFAULT_CLIP}, trained with `editlab train clip`) or a local CLIP folder."
        ) from err
    return clip, processor, source


def strip_brackets(prompt: str) -> str:
    """PIE-Bench marks edited words with brackets ("a [red] car"); CLIP must not see them."""
    return prompt.replace("[", "").replace("]", "")


class _CLIPMetric(EditMetric):
    """Shared CLIP plumbing: image and text embeddings from one cached model. The column name carries the
    model's tag (``clip_score[sw-clip]``, ``clip_score[vit-l14]``): scores of different CLIP models are never
    one column."""

    def __init__(self, model: str = DEFAULT_CLIP, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.model_name = model
        self.clip, self.processor, self.source = load_clip(model)
        self.name = f"{type(self).name}[{model_tag(model)}]"

    def weight_files(self) -> list[Path]:
        return model_weight_files(self.source)

    @torch.no_grad()
    def image_embeds(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> L2-normalised image embeddings."""
        pixels = (images.clamp(0, 1) * 255).round().to(torch.uint8).cpu()
        inputs = self.processor(images=list(pixels), return_tensors="pt")
        feats = _features(self.clip.get_image_features(pixel_values=inputs["pixel_values"]))
        return torch.nn.functional.normalize(feats.float(), dim=-1)

    @torch.no_grad()
    def text_embeds(self, prompts: list[str]) -> torch.Tensor:
        prompts = [strip_brackets(p) for p in prompts]
        inputs = self.processor(text=prompts, return_tensors="pt", padding=True, truncation=True)
        feats = _features(self.clip.get_text_features(input_ids=inputs["input_ids"],
                                                      attention_mask=inputs["attention_mask"]))
        return torch.nn.functional.normalize(feats.float(), dim=-1)

    def extra_description(self) -> dict[str, Any]:
        return {"backbone": self.model_name}


class CLIPScoreMetric(_CLIPMetric):
    name = "clip_score"
    definition = "100 * max(cos(CLIP image embedding of the edit, CLIP text embedding of the target prompt), 0)"
    higher_is_better = True
    worst = 0.0

    def _images(self, batch: EditBatch) -> torch.Tensor | None:
        return batch.edited

    def per_sample(self, batch: EditBatch) -> torch.Tensor:
        out = torch.full((len(batch),), float("nan"))
        images = self._images(batch)
        idx = [i for i, p in enumerate(batch.target_prompts) if p]
        if images is None or not idx:
            return out
        img = self.image_embeds(images[idx])
        txt = self.text_embeds([batch.target_prompts[i] for i in idx])
        out[idx] = 100 * (img * txt).sum(-1).clamp(min=0)
        return out


class CLIPEditedRegion(CLIPScoreMetric):
    """PIE-Bench's "edited" CLIP similarity: the edit multiplied by the mask (outside set to black)."""

    name = "clip_edited"
    definition = "CLIP score of (edited image x edit mask, outside black) against the target prompt; NaN without mask"

    def _images(self, batch: EditBatch) -> torch.Tensor | None:
        if batch.mask is None:
            return None
        return batch.edited * (batch.mask > 0.5).float()

    def per_sample(self, batch: EditBatch) -> torch.Tensor:
        out = super().per_sample(batch)
        if batch.mask is not None:
            out[batch.mask.flatten(1).amax(1) == 0] = float("nan")
        return out


class CLIPDirectional(_CLIPMetric):
    """Directional similarity (Gal et al., StyleGAN-NADA; used by InstructPix2Pix): does the image change in the
    direction the text changes?"""

    name = "clip_dir"
    definition = "cos(E_img(edit) - E_img(source), E_txt(target prompt) - E_txt(source prompt))"
    higher_is_better = True
    worst = -1.0

    def per_sample(self, batch: EditBatch) -> torch.Tensor:
        out = torch.full((len(batch),), float("nan"))
        idx = [i for i in range(len(batch)) if batch.source_prompts[i] and batch.target_prompts[i]]
        if not idx:
            return out
        d_img = self.image_embeds(batch.edited[idx]) - self.image_embeds(batch.source[idx])
        d_txt = self.text_embeds([batch.target_prompts[i] for i in idx]) - self.text_embeds(
            [batch.source_prompts[i] for i in idx])
        out[idx] = torch.nn.functional.cosine_similarity(d_img, d_txt, dim=-1)
        return out


class CLIPImageSimilarity(_CLIPMetric):
    """CLIP-I: cosine similarity of image embeddings, edit vs source (``reference=source``) or vs the
    ground-truth target (``reference=target``, fidelity; NaN when the dataset has none)."""

    name = "clip_i"
    definition = "cos(E_img(edit), E_img(source or ground-truth target image))"
    higher_is_better = True
    worst = -1.0

    def __init__(self, model: str = DEFAULT_CLIP, reference: str = "source", **kwargs: Any) -> None:
        super().__init__(model=model, **kwargs)
        if reference not in ("source", "target"):
            raise ValueError(f"reference must be 'source' or 'target', got '{reference}'")
        self.reference = reference
        self.name = f"{'clip_i' if reference == 'source' else 'gt_clip_i'}[{model_tag(model)}]"
        self.definition = f"cos(E_img(edit), E_img({reference} image))"

    def per_sample(self, batch: EditBatch) -> torch.Tensor:
        ref = batch.source if self.reference == "source" else batch.target
        if ref is None:
            return torch.full((len(batch),), float("nan"))
        return (self.image_embeds(batch.edited) * self.image_embeds(ref)).sum(-1)
