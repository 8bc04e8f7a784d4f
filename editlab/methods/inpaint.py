"""Stable Diffusion inpainting (Rombach et al., "High-Resolution Image Synthesis with Latent Diffusion Models",
CVPR 2022; the SD-inpainting checkpoints of that work).

A UNet fine-tuned with 5 extra input channels, the latent-resolution mask and the latents of the masked image,
regenerates the masked region under the target prompt. Implemented with the inpainting pipeline of the
backbone's family (:mod:`editlab.models.families`, task ``inpaint``) built from the backbone's components:
``StableDiffusionInpaintPipeline`` (sd) and ``StableDiffusionXLInpaintPipeline`` (sdxl) need a 9-channel
inpainting UNet (the method config brings its own ``backbone`` node, editlab's ShapesWorld inpainting model by
default; ``configs/backbone/sd15_inpaint.yaml`` / ``sdxl_inpaint.yaml`` name the public ones);
``FluxFillPipeline`` (flux-fill) takes FLUX Fill's transformer with mask channels; ``StableDiffusion3InpaintPipeline``
(sd3) and ``FluxInpaintPipeline`` (flux) inpaint with the plain text-to-image transformer, keeping the source
outside the mask at every step.

Preset ``sd`` (diffusers' ``StableDiffusionInpaintPipeline`` defaults, as the SD-inpainting model card runs it):
``strength=1.0`` (the region is regenerated from pure noise), guidance 7.5, 50 steps, no mask dilation.
Backbones without a preset use the same strength and dilation with their own guidance and step count.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from PIL import Image, ImageFilter

from editlab.methods.base import EditMethod
from editlab.methods.defaults import fill_unset
from editlab.methods.presets import Preset
from editlab.models.families import build_pipeline, call_kwargs, guidance_kwargs
from editlab.models.speed import pipeline_cache_context
from editlab.types import Condition, EditOutput, LearningStrategy, Sample, TaskType, Taxonomy

LOCAL_TASKS = (
    TaskType.OBJECT_ADDITION,
    TaskType.OBJECT_REMOVAL,
    TaskType.OBJECT_REPLACEMENT,
    TaskType.BACKGROUND_CHANGE,
    TaskType.COLOR_CHANGE,
    TaskType.TEXTURE_CHANGE,
)


def require_in_channels(backbone, channels: int, method: str, hint: str) -> None:
    """Fail early, with a pointer to the right backbone, when the UNet is not the specialised one ``method`` needs."""
    found = backbone.unet.config.in_channels
    if found != channels:
        raise ValueError(
            f"{method} needs a UNet with {channels} input channels, but backbone '{backbone.name}' has {found}. {hint}"
        )


def dilate_mask(mask: Image.Image, pixels: int) -> Image.Image:
    """Grow the (binary, "L") mask by ``pixels`` in every direction."""
    mask = mask.convert("L")
    return mask.filter(ImageFilter.MaxFilter(2 * pixels + 1)) if pixels > 0 else mask


class SDInpaint(EditMethod):
    name = "inpaint"
    taxonomy = Taxonomy(
        learning_strategy=LearningStrategy.TRAINING_BASED,
        conditions=(Condition.MASK, Condition.PROMPT_PAIR),
        tasks=LOCAL_TASKS,
        paper="Rombach et al., Latent Diffusion / SD inpainting, CVPR 2022",
    )
    families = ("sd", "sdxl", "sd3", "flux", "flux-fill")
    presets: ClassVar[dict[str, Preset]] = {
        "sd": Preset(source="huggingface/diffusers StableDiffusionInpaintPipeline defaults (model card of "
                            "stable-diffusion-v1-5/stable-diffusion-inpainting)",
                     settings={"strength": 1.0, "guidance_scale": 7.5, "num_inference_steps": 50, "mask_dilation": 0}),
    }

    def __init__(self, strength: float | None = None, guidance_scale: float | None = None,
                 num_inference_steps: int | None = None, mask_dilation: int | None = None) -> None:
        super().__init__(strength=strength, guidance_scale=guidance_scale, num_inference_steps=num_inference_steps,
                         mask_dilation=mask_dilation)
        if strength is not None and not 0.0 < strength <= 1.0:
            raise ValueError(f"strength must be in (0, 1], got {strength}")
        if mask_dilation is not None and mask_dilation < 0:
            raise ValueError(f"mask_dilation must be >= 0, got {mask_dilation}")
        self.strength = strength
        self.guidance_scale = guidance_scale
        self.num_inference_steps = num_inference_steps
        self.mask_dilation = mask_dilation

    def setup(self, backbone, cache_dir=None) -> None:
        super().setup(backbone, cache_dir)
        self.preset_record["defaults"] = fill_unset(self, {
            "strength": 1.0, "guidance_scale": backbone.guidance_scale,
            "num_inference_steps": backbone.num_inference_steps, "mask_dilation": 0})
        if backbone.unet is not None:  # sd, sdxl: the specialised inpainting UNet
            require_in_channels(backbone, 9, "SD inpainting", "Use an inpainting backbone, e.g. the method config's "
                                "own `backbone` node (weights/shapesworld/sd-inpaint), configs/backbone/"
                                "sd15_inpaint.yaml or sdxl_inpaint.yaml.")
        elif backbone.family == "sd3" and backbone.denoiser.config.in_channels not in (16, 33):
            # StableDiffusion3InpaintPipeline's own check, made before any edit runs
            raise ValueError(f"SD3 inpainting needs a transformer with 16 or 33 input channels (SD3's 16-channel VAE), "
                             f"but backbone '{backbone.name}' has {backbone.denoiser.config.in_channels}; "
                             f"shapesworld_flow's 4-channel latents cannot be inpainted by this pipeline")
        self.pipe = build_pipeline(backbone, "inpaint")

    def edit(self, sample: Sample, generator: torch.Generator) -> EditOutput:
        bb = self.backbone
        # 1. The region to regenerate: the sample's mask, optionally dilated
        mask = dilate_mask(sample.mask, self.mask_dilation)
        # 2. Denoise the masked region under the target prompt, guidance as the family takes it; the model sees
        #    the masked source as context
        kwargs = guidance_kwargs(bb, self.guidance_scale) | call_kwargs(bb)
        with pipeline_cache_context(bb):
            image = self.pipe(
                prompt=sample.target_prompt,
                image=sample.source_image,
                mask_image=mask,
                height=bb.resolution,
                width=bb.resolution,
                strength=self.strength,
                num_inference_steps=self.num_inference_steps,
                generator=generator,
                **kwargs,
            ).images[0]
        return EditOutput(image=image)
