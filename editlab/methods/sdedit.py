"""SDEdit: Guided Image Synthesis and Editing with Stochastic Differential Equations (Meng et al., ICLR 2022).

Noise the source image to an intermediate time ``strength * T`` and denoise it under the target prompt.
Implemented with the image-to-image pipeline of the backbone's family (:mod:`editlab.models.families`, task
``img2img``), built from the backbone's components: ``StableDiffusionImg2ImgPipeline`` (sd),
``StableDiffusionXLImg2ImgPipeline`` (sdxl), ``StableDiffusion3Img2ImgPipeline`` (sd3, flow matching: the source
is moved along the straight path to ``sigma = strength``) and ``FluxImg2ImgPipeline`` (flux). Guidance is given as
the family takes it (classifier-free or distilled).

Preset ``sd``: Stable Diffusion's own SDEdit script (CompVis/stable-diffusion ``scripts/img2img.py``, "image
modification" in SD's README): 50 DDIM steps (eta 0), strength 0.75, guidance 5.0. Backbones without a preset
use ``strength=0.5`` (the paper's sweet spot between faithfulness and realism lies at t0 in [0.3, 0.6]), their own
scheduler, guidance and step count.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from editlab.methods.base import EditMethod
from editlab.methods.common import ddim_scheduler
from editlab.methods.defaults import fill_unset
from editlab.methods.presets import Preset
from editlab.models.families import build_pipeline, call_kwargs, guidance_kwargs
from editlab.models.speed import pipeline_cache_context
from editlab.types import Condition, EditOutput, LearningStrategy, Sample, TaskType, Taxonomy

SCHEDULERS = ("ddim", "backbone")


class SDEdit(EditMethod):
    name = "sdedit"
    taxonomy = Taxonomy(
        learning_strategy=LearningStrategy.TRAINING_FREE,
        conditions=(Condition.PROMPT_PAIR,),
        tasks=tuple(TaskType),
        paper="Meng et al., SDEdit, ICLR 2022",
    )
    families = ("sd", "sdxl", "sd3", "flux")
    presets: ClassVar[dict[str, Preset]] = {
        "sd": Preset(source="CompVis/stable-diffusion scripts/img2img.py (SD's SDEdit: --strength 0.75 "
                            "--scale 5.0 --ddim_steps 50, DDIM eta 0)",
                     settings={"strength": 0.75, "guidance_scale": 5.0, "num_inference_steps": 50,
                               "scheduler": "ddim"}),
    }

    def __init__(self, strength: float | None = None, guidance_scale: float | None = None,
                 num_inference_steps: int | None = None, scheduler: str | None = None) -> None:
        super().__init__(strength=strength, guidance_scale=guidance_scale, num_inference_steps=num_inference_steps,
                         scheduler=scheduler)
        if strength is not None and not 0.0 < strength <= 1.0:
            raise ValueError(f"strength must be in (0, 1], got {strength}")
        if scheduler is not None and scheduler not in SCHEDULERS:
            raise ValueError(f"unknown scheduler {scheduler!r}; valid: {', '.join(SCHEDULERS)}")
        self.strength = strength
        self.guidance_scale = guidance_scale
        self.num_inference_steps = num_inference_steps
        self.scheduler = scheduler

    def setup(self, backbone, cache_dir=None) -> None:
        super().setup(backbone, cache_dir)
        self.preset_record["defaults"] = fill_unset(self, {
            "strength": 0.5, "guidance_scale": backbone.guidance_scale,
            "num_inference_steps": backbone.num_inference_steps, "scheduler": "backbone"})
        if self.scheduler == "ddim" and backbone.unet is None:
            raise ValueError(f"scheduler='ddim' needs a diffusion UNet backbone; family '{backbone.family}' samples a "
                             f"flow with its own scheduler: use scheduler=backbone")
        overrides = {"scheduler": ddim_scheduler(backbone)} if self.scheduler == "ddim" else {}
        self.pipe = build_pipeline(backbone, "img2img", **overrides)

    def edit(self, sample: Sample, generator: torch.Generator) -> EditOutput:
        # 1. Check inputs: the source is resized to the backbone's working resolution by the runner
        # 2. Noise to t0 = strength * T and denoise with the target prompt, guidance as the family takes it
        kwargs = guidance_kwargs(self.backbone, self.guidance_scale) | call_kwargs(self.backbone)
        if self.backbone.unet is None:  # transformer pipelines take the working size explicitly
            kwargs |= {"height": sample.source_image.height, "width": sample.source_image.width}
        with pipeline_cache_context(self.backbone):
            image = self.pipe(
                prompt=sample.target_prompt,
                image=sample.source_image,
                strength=self.strength,
                num_inference_steps=self.num_inference_steps,
                generator=generator,
                **kwargs,
            ).images[0]
        return EditOutput(image=image, info={"steps_run": int(self.num_inference_steps * self.strength)})
