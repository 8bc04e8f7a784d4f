"""Instruction editors: a model trained on (source image, instruction, edited image), run through its own pipeline.

One method for every family whose diffusers pipeline takes (image, instruction) (:mod:`editlab.models.families`,
task ``instruct``):

* ``sd`` / ``sdxl``: InstructPix2Pix (Brooks et al., CVPR 2023) and its SDXL port, the source latents as extra
  UNet input channels and two classifier-free guidance scales (text ``guidance_scale``, image
  ``image_guidance_scale``);
* ``flux-kontext``: FLUX.1 Kontext [dev] (Black Forest Labs, 2025), the source image's tokens appended to the
  target's, guidance-distilled (``guidance_scale`` feeds the guidance embedding);
* ``qwen-image-edit`` / ``qwen-image-edit-plus``: Qwen-Image-Edit(-2509) (Wu et al., 2025), the source through
  Qwen2.5-VL and the VAE, true classifier-free guidance (``true_cfg_scale`` with a negative prompt).

**Working size.** InstructPix2Pix works at the input's size. Kontext and Qwen-Image-Edit resize the input to their
preferred area (``working_size=auto``, the default: Kontext picks the closest of ``PREFERRED_KONTEXT_RESOLUTIONS``;
Qwen ``calculate_dimensions(1024 * 1024, ratio)``), so the output can be larger than the input: editlab resizes
it back to the input's size (bicubic) so that every metric compares like with like, and records both sizes
(``info.working_size``, ``info.output_size``, ``info.resized_to_input``). ``working_size=input`` makes the pipeline
work at the input's size instead (Kontext ``_auto_resize=False``, ``max_area`` = the input's area; Qwen
``height``/``width``; Qwen's pipelines still encode the source at about 1024x1024 internally, which is recorded).

Presets per backbone preset (each names where it was read); without one, the backbone's step count and guidance
scale and the image guidance scale 1.5 of the InstructPix2Pix paper.
"""

from __future__ import annotations

import torch
from PIL import Image

from editlab.methods.base import EditMethod
from editlab.methods.presets import Preset
from editlab.models.families import build_pipeline, call_kwargs, get_family, guidance_kwargs, preferred_size
from editlab.models.speed import pipeline_cache_context
from editlab.types import Condition, EditOutput, LearningStrategy, Sample, TaskType, Taxonomy

WORKING_SIZES = ("auto", "input")


class Instruct(EditMethod):
    name = "instruct"
    taxonomy = Taxonomy(
        learning_strategy=LearningStrategy.TRAINING_BASED,
        conditions=(Condition.INSTRUCTION,),
        tasks=tuple(TaskType),
        paper="Brooks et al., InstructPix2Pix, CVPR 2023; Labs et al., FLUX.1 Kontext, 2025; Wu et al., "
              "Qwen-Image, 2025",
    )
    families = ("sd", "sdxl", "flux-kontext", "qwen-image-edit", "qwen-image-edit-plus")
    presets = {
        "sd": Preset("Brooks et al. 2023, Sec. 4 and timbrooks/instruct-pix2pix edit_cli.py (100 steps, "
                     "cfg-text 7.5, cfg-image 1.5)",
                     {"num_inference_steps": 100, "guidance_scale": 7.5, "image_guidance_scale": 1.5}),
        "sdxl": Preset("diffusers StableDiffusionXLInstructPix2PixPipeline docstring example "
                       "(diffusers/sdxl-instructpix2pix-768: 30 steps, guidance 3.0, image guidance 1.5)",
                       {"num_inference_steps": 30, "guidance_scale": 3.0, "image_guidance_scale": 1.5}),
        "flux-kontext": Preset("diffusers FluxKontextPipeline docstring example (FLUX.1-Kontext-dev: guidance 2.5) "
                               "and __call__ default of 28 steps",
                               {"num_inference_steps": 28, "guidance_scale": 2.5}),
        "qwen-image-edit": Preset("diffusers QwenImageEditPipeline __call__ defaults (50 steps, true_cfg_scale 4.0)",
                                  {"num_inference_steps": 50, "guidance_scale": 4.0}),
        "qwen-image-edit-plus": Preset("diffusers QwenImageEditPlusPipeline docstring example (50 steps) and "
                                       "__call__ default true_cfg_scale 4.0",
                                       {"num_inference_steps": 50, "guidance_scale": 4.0}),
    }

    def __init__(self, guidance_scale: float | None = None, image_guidance_scale: float | None = None,
                 num_inference_steps: int | None = None, working_size: str = "auto") -> None:
        super().__init__(guidance_scale=guidance_scale, image_guidance_scale=image_guidance_scale,
                         num_inference_steps=num_inference_steps, working_size=working_size)
        if working_size not in WORKING_SIZES:
            raise ValueError(f"unknown working_size '{working_size}', available: {', '.join(WORKING_SIZES)}")
        self.guidance_scale = guidance_scale
        self.image_guidance_scale = image_guidance_scale
        self.num_inference_steps = num_inference_steps
        self.working_size = working_size

    def setup(self, backbone, cache_dir=None) -> None:
        super().setup(backbone, cache_dir)
        if backbone.unet is not None and backbone.unet.config.in_channels != 8:
            raise ValueError(f"instruct on family '{backbone.family}' needs an InstructPix2Pix UNet with 8 input "
                             f"channels, but backbone '{backbone.name}' has {backbone.unet.config.in_channels}; use "
                             f"an instruction backbone (e.g. instruct_pix2pix, sdxl_instruct_pix2pix)")
        self.pipe = build_pipeline(backbone, "instruct")
        self.guidance = get_family(backbone.family).guidance
        # the backbone's resolution policy: `fixed` (toy, ShapesWorld) overrides a family's preferred area
        self.policy = backbone.resolution_policy or get_family(backbone.family).resolution_policy

    def _size_kwargs(self, image: Image.Image) -> tuple[dict, tuple[int, int]]:
        """Pipeline arguments that set the working size, and that size (width, height)."""
        w, h = image.size
        family = self.backbone.family
        auto = self.working_size == "auto" and self.policy == "preferred_area"
        if family == "flux-kontext":
            if auto:
                return {}, preferred_size(family, w, h)
            return {"height": h, "width": w, "max_area": w * h, "_auto_resize": False}, (w, h)
        if family.startswith("qwen-image-edit"):
            return ({}, preferred_size(family, w, h)) if auto else ({"height": h, "width": w}, (w, h))
        return {}, (w, h)

    def edit(self, sample: Sample, generator: torch.Generator) -> EditOutput:
        bb = self.backbone
        steps = self.num_inference_steps or bb.num_inference_steps
        guidance = self.guidance_scale if self.guidance_scale is not None else bb.guidance_scale
        # 1. Guidance as the family takes it; InstructPix2Pix adds the image scale
        kwargs = guidance_kwargs(bb, guidance) | call_kwargs(bb)
        image_guidance = None
        if bb.unet is not None:
            image_guidance = self.image_guidance_scale if self.image_guidance_scale is not None else 1.5
            kwargs["image_guidance_scale"] = image_guidance
        # 2. The working size (the family's preferred area, or the input's)
        size_kwargs, working = self._size_kwargs(sample.source_image)
        image = [sample.source_image] if bb.family == "qwen-image-edit-plus" else sample.source_image
        # 3. Edit through the family's instruction pipeline
        with pipeline_cache_context(bb):
            out = self.pipe(prompt=sample.instruction, image=image, num_inference_steps=steps, generator=generator,
                            **kwargs, **size_kwargs).images[0]
        # 4. Back to the input's size for the metrics, recording what the model worked at
        output_size = list(out.size)
        resized = out.size != sample.source_image.size
        if resized:
            out = out.resize(sample.source_image.size, Image.BICUBIC)
        info = {"guidance": self.guidance, "guidance_scale": guidance, "num_inference_steps": steps,
                "working_size": list(working), "output_size": output_size, "resized_to_input": resized}
        if image_guidance is not None:
            info["image_guidance_scale"] = image_guidance
        if bb.family.startswith("qwen-image-edit"):
            info["source_encoded_at"] = list(preferred_size(bb.family, *sample.source_image.size))
        return EditOutput(image=out, info=info)
