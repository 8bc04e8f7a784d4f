"""Backbone families: which diffusers pipelines serve a model architecture, and how it likes to be sampled.

A **family** names a model architecture as diffusers ships it (``sd``, ``sdxl``, ``sd3``, ``flux``,
``flux-fill``, ``flux-kontext``, ``qwen-image``, ``qwen-image-edit``, ``qwen-image-edit-plus``). For each, this
module records

* the diffusers pipeline class per **task** (``text2img``, ``img2img``, ``inpaint``, ``instruct``, ``ledits``),
  built from a :class:`~editlab.models.backbone.Backbone`'s components by :func:`build_pipeline`;
* how **guidance** is passed: ``cfg`` (classifier-free guidance, ``guidance_scale``), ``distilled`` (FLUX.1-dev
  and Kontext: ``guidance_scale`` feeds the transformer's guidance embedding, one forward per step) or
  ``true_cfg`` (Qwen-Image: ``true_cfg_scale`` with a negative prompt, two forwards per step);
  :func:`guidance_kwargs` turns a scale into the right pipeline arguments;
* the recommended **steps, guidance scale, resolution and dtype** (the defaults of the diffusers pipeline's
  ``__call__`` and of the model cards it links), used when a backbone config leaves them unset;
* the **resolution policy**: ``fixed`` (the pipeline works at the size it is given) or ``preferred_area``
  (FLUX.1 Kontext and Qwen-Image-Edit resize the input to their preferred area, about 1024x1024 pixels at the
  input's aspect ratio, so the output size can differ from the input's);
* example **hub ids** for GPU users.

The family of a model folder or hub id is read from its ``model_index.json`` (``_class_name``) when a backbone
config says ``family: auto``; :func:`config_family` does this without loading any weight, so the runner can
refuse a method/backbone pair before loading. This module is in the bottom layer: it imports nothing above
``editlab.models``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TASKS = ("text2img", "img2img", "inpaint", "instruct", "ledits")
GUIDANCE_KINDS = ("cfg", "distilled", "true_cfg")


class UnsupportedTask(ValueError):
    """The backbone's family has no diffusers pipeline for this task."""


class UnknownFamily(ValueError):
    """A family name or a model_index.json class that editlab does not know."""


@dataclass(frozen=True)
class Family:
    """One model architecture: its pipelines per task and its recommended sampling settings."""

    name: str
    description: str
    denoiser: str  # "unet" or "transformer": the component the sampling loop calls
    pipelines: Mapping[str, str]  # task -> diffusers pipeline class name
    guidance: str  # one of GUIDANCE_KINDS
    num_inference_steps: int
    guidance_scale: float
    resolution: int
    dtype: str
    resolution_policy: str = "fixed"  # "fixed" | "preferred_area"
    hub_ids: tuple[str, ...] = ()
    source: str = ""  # where the recommended settings were read
    call_kwargs: Mapping[str, Any] = field(default_factory=dict)  # extra pipeline-call defaults (a negative prompt)


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family(
            "sd", "Stable Diffusion 1.x/2.x (UNet2DConditionModel, one CLIP text encoder)", "unet",
            {"text2img": "StableDiffusionPipeline", "img2img": "StableDiffusionImg2ImgPipeline",
             "inpaint": "StableDiffusionInpaintPipeline", "instruct": "StableDiffusionInstructPix2PixPipeline",
             "ledits": "LEditsPPPipelineStableDiffusion"},
            "cfg", 50, 7.5, 512, "float16",
            hub_ids=("stable-diffusion-v1-5/stable-diffusion-v1-5", "CompVis/stable-diffusion-v1-4",
                     "stable-diffusion-v1-5/stable-diffusion-inpainting", "timbrooks/instruct-pix2pix"),
            source="diffusers StableDiffusionPipeline.__call__ defaults",
        ),
        Family(
            "sdxl", "Stable Diffusion XL (UNet with text-time conditioning, two CLIP text encoders)", "unet",
            {"text2img": "StableDiffusionXLPipeline", "img2img": "StableDiffusionXLImg2ImgPipeline",
             "inpaint": "StableDiffusionXLInpaintPipeline", "instruct": "StableDiffusionXLInstructPix2PixPipeline",
             "ledits": "LEditsPPPipelineStableDiffusionXL"},
            "cfg", 50, 5.0, 1024, "float16",
            hub_ids=("stabilityai/stable-diffusion-xl-base-1.0",
                     "diffusers/stable-diffusion-xl-1.0-inpainting-0.1", "diffusers/sdxl-instructpix2pix-768"),
            source="diffusers StableDiffusionXLPipeline.__call__ defaults",
        ),
        Family(
            "sd3", "Stable Diffusion 3 / 3.5 (MMDiT SD3Transformer2DModel, two CLIP + T5, flow matching)",
            "transformer",
            {"text2img": "StableDiffusion3Pipeline", "img2img": "StableDiffusion3Img2ImgPipeline",
             "inpaint": "StableDiffusion3InpaintPipeline"},
            "cfg", 28, 7.0, 1024, "float16",
            hub_ids=("stabilityai/stable-diffusion-3-medium-diffusers", "stabilityai/stable-diffusion-3.5-medium",
                     "stabilityai/stable-diffusion-3.5-large"),
            source="diffusers StableDiffusion3Pipeline.__call__ defaults",
        ),
        Family(
            "flux", "FLUX.1 [dev] (FluxTransformer2DModel, CLIP + T5, guidance-distilled flow matching)",
            "transformer",
            {"text2img": "FluxPipeline", "img2img": "FluxImg2ImgPipeline", "inpaint": "FluxInpaintPipeline"},
            "distilled", 28, 3.5, 1024, "bfloat16",
            hub_ids=("black-forest-labs/FLUX.1-dev",),
            source="diffusers FluxPipeline.__call__ defaults",
        ),
        Family(
            "flux-fill", "FLUX.1 Fill [dev] (FLUX transformer with mask and masked-image channels)", "transformer",
            {"inpaint": "FluxFillPipeline"},
            "distilled", 50, 30.0, 1024, "bfloat16",
            hub_ids=("black-forest-labs/FLUX.1-Fill-dev",),
            source="diffusers FluxFillPipeline.__call__ defaults",
        ),
        Family(
            "flux-kontext", "FLUX.1 Kontext [dev] (FLUX transformer over target + source-image tokens)",
            "transformer",
            {"text2img": "FluxKontextPipeline", "instruct": "FluxKontextPipeline"},
            "distilled", 28, 2.5, 1024, "bfloat16", resolution_policy="preferred_area",
            hub_ids=("black-forest-labs/FLUX.1-Kontext-dev",),
            source="diffusers FluxKontextPipeline docstring example (guidance_scale=2.5, 28 steps by default; "
                   "PREFERRED_KONTEXT_RESOLUTIONS)",
        ),
        Family(
            "qwen-image", "Qwen-Image (QwenImageTransformer2DModel, Qwen2.5-VL text encoder)", "transformer",
            {"text2img": "QwenImagePipeline", "img2img": "QwenImageImg2ImgPipeline",
             "inpaint": "QwenImageInpaintPipeline"},
            "true_cfg", 50, 4.0, 1024, "bfloat16",
            hub_ids=("Qwen/Qwen-Image",),
            source="diffusers QwenImagePipeline.__call__ defaults (true_cfg_scale=4.0, 50 steps)",
            call_kwargs={"negative_prompt": " "},
        ),
        Family(
            "qwen-image-edit", "Qwen-Image-Edit (Qwen-Image transformer, the source image through Qwen2.5-VL and "
            "the VAE)", "transformer",
            {"instruct": "QwenImageEditPipeline"},
            "true_cfg", 50, 4.0, 1024, "bfloat16", resolution_policy="preferred_area",
            hub_ids=("Qwen/Qwen-Image-Edit",),
            source="diffusers QwenImageEditPipeline.__call__ defaults (true_cfg_scale=4.0, 50 steps, "
                   "calculate_dimensions(1024*1024))",
            call_kwargs={"negative_prompt": " "},
        ),
        Family(
            "qwen-image-edit-plus", "Qwen-Image-Edit-2509 (Edit Plus: multi-image conditioning)", "transformer",
            {"instruct": "QwenImageEditPlusPipeline"},
            "true_cfg", 50, 4.0, 1024, "bfloat16", resolution_policy="preferred_area",
            hub_ids=("Qwen/Qwen-Image-Edit-2509",),
            source="diffusers QwenImageEditPlusPipeline (docstring example: 50 steps; true_cfg_scale=4.0; "
                   "CONDITION_IMAGE_SIZE 384^2 for the VL encoder, VAE_IMAGE_SIZE 1024^2)",
            call_kwargs={"negative_prompt": " "},
        ),
    )
}

#: diffusers pipeline class name -> family (each class belongs to exactly one family).
CLASS_TO_FAMILY: dict[str, str] = {cls: f.name for f in FAMILIES.values() for cls in f.pipelines.values()}


def get_family(name: str) -> Family:
    """The :class:`Family` called ``name``; an unknown name lists the known ones."""
    if name not in FAMILIES:
        raise UnknownFamily(f"unknown backbone family '{name}', available: {', '.join(FAMILIES)}")
    return FAMILIES[name]


def family_of_class(class_name: str) -> str:
    """The family of a diffusers pipeline class name (as in ``model_index.json``'s ``_class_name``)."""
    if class_name not in CLASS_TO_FAMILY:
        raise UnknownFamily(
            f"model_index.json names the pipeline class '{class_name}', which editlab does not map to a backbone "
            f"family; set backbone.family explicitly (one of: {', '.join(FAMILIES)}). Known classes: "
            f"{', '.join(sorted(CLASS_TO_FAMILY))}")
    return CLASS_TO_FAMILY[class_name]


def read_model_index(source: str, local_files_only: bool | None = None) -> dict[str, Any]:
    """``model_index.json`` of a local diffusers folder or hub id (the hub copy only downloads that file)."""
    p = Path(os.path.expanduser(source))
    if p.is_dir():
        index = p / "model_index.json"
        if not index.is_file():
            raise FileNotFoundError(f"'{source}' has no model_index.json: it is not a diffusers pipeline folder")
        return json.loads(index.read_text())
    if local_files_only is None:
        local_files_only = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false")
    from diffusers import DiffusionPipeline

    try:
        return dict(DiffusionPipeline.load_config(source, local_files_only=local_files_only))
    except Exception as err:
        raise FileNotFoundError(
            f"could not read model_index.json of '{source}' ({type(err).__name__}: {err}); offline, a hub id must be "
            f"in the Hugging Face cache, or point backbone.pretrained at a local folder") from err


def config_family(cfg: Mapping[str, Any]) -> str:
    """The family a backbone config will load, without loading weights.

    ``family`` as given; ``auto`` (or a config with no family but ``pipeline: auto``) reads
    ``model_index.json`` of ``pretrained``. A config with neither is ``sd`` (editlab's original backbones)."""
    family, pipeline = cfg.get("family"), cfg.get("pipeline")
    if family not in (None, "auto"):
        get_family(str(family))
        return str(family)
    if family is None and pipeline != "auto":
        return CLASS_TO_FAMILY.get(str(pipeline), "sd") if pipeline else "sd"
    if cfg.get("pretrained") is None:
        raise UnknownFamily("backbone family 'auto' needs `pretrained` (a model folder or hub id) to read it from")
    from editlab.models.backbone import _resolve_source

    index = read_model_index(_resolve_source(str(cfg["pretrained"])), cfg.get("local_files_only"))
    return family_of_class(str(index.get("_class_name")))


def pipeline_class(family: str, task: str) -> type:
    """The diffusers pipeline class of ``family`` for ``task``; a missing task lists the ones the family has."""
    if task not in TASKS:
        raise ValueError(f"unknown pipeline task '{task}', available: {', '.join(TASKS)}")
    fam = get_family(family)
    if task not in fam.pipelines:
        with_task = [f.name for f in FAMILIES.values() if task in f.pipelines]
        raise UnsupportedTask(
            f"backbone family '{family}' has no {task} pipeline (its tasks: {', '.join(fam.pipelines)}); families "
            f"with one: {', '.join(with_task)}")
    import diffusers

    return getattr(diffusers, fam.pipelines[task])


def build_pipeline(backbone: Any, task: str, **overrides: Any) -> Any:
    """The backbone family's diffusers pipeline for ``task``, built from the backbone's loaded components.

    Speed switches that act on pipelines (CPU offload) are applied here (:mod:`editlab.models.speed`)."""
    from editlab.models.speed import apply_pipeline_speed

    pipe = backbone.pipeline(pipeline_class(backbone.family, task), **overrides)
    return apply_pipeline_speed(pipe, backbone)


def guidance_kwargs(backbone: Any, scale: float) -> dict[str, Any]:
    """The pipeline-call arguments that apply guidance ``scale`` the way the backbone's family takes it.

    ``cfg`` and ``distilled``: ``guidance_scale`` (the pipeline either runs classifier-free guidance or feeds the
    scale to the guidance embedding). ``true_cfg``: ``true_cfg_scale`` plus the family's negative prompt
    (Qwen-Image enables true CFG only when one is given)."""
    fam = get_family(backbone.family)
    if fam.guidance == "true_cfg":
        return {"true_cfg_scale": float(scale), "negative_prompt": fam.call_kwargs.get("negative_prompt", " ")}
    return {"guidance_scale": float(scale)}


def call_kwargs(backbone: Any) -> dict[str, Any]:
    """Pipeline-call defaults a model records for itself (``editlab.json``, e.g. ``max_sequence_length`` of a model
    without T5), passed to every pipeline call of its methods."""
    return dict(getattr(backbone, "call_kwargs", {}) or {})


def preferred_size(family: str, width: int, height: int) -> tuple[int, int]:
    """The (width, height) a ``preferred_area`` family's pipeline works at for a ``width`` x ``height`` input.

    FLUX.1 Kontext: the entry of ``PREFERRED_KONTEXT_RESOLUTIONS`` closest in aspect ratio; Qwen-Image-Edit(-Plus):
    ``calculate_dimensions(1024 * 1024, ratio)`` (multiples of 32); ``fixed`` families: the input's size."""
    fam = get_family(family)
    if fam.resolution_policy != "preferred_area":
        return width, height
    ratio = width / height
    if family == "flux-kontext":
        from diffusers.pipelines.flux.pipeline_flux_kontext import PREFERRED_KONTEXT_RESOLUTIONS

        _, w, h = min((abs(ratio - w / h), w, h) for w, h in PREFERRED_KONTEXT_RESOLUTIONS)
        return w, h
    from diffusers.pipelines.qwenimage.pipeline_qwenimage_edit import calculate_dimensions

    w, h, _ = calculate_dimensions(1024 * 1024, ratio)
    return int(w), int(h)


def describe_families() -> list[str]:
    """One line per family for ``editlab list``."""
    lines = []
    for f in FAMILIES.values():
        tasks = ", ".join(f"{t}={c}" for t, c in f.pipelines.items())
        lines.append(f"{f.name:<22} {f.guidance:<9} {f.num_inference_steps:>3} steps, guidance {f.guidance_scale}, "
                     f"{f.resolution}px {f.resolution_policy}, {f.dtype}  [{tasks}]")
    return lines
