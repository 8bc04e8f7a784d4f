"""SDEdit: Guided Image Synthesis and Editing with Stochastic Differential Equations (Meng et al., ICLR 2022).

Noise the source image to an intermediate time ``strength * T`` and denoise it under the target prompt.
Implemented with diffusers' ``StableDiffusionImg2ImgPipeline`` built from the backbone's components.
Default ``strength=0.5``: the paper's sweet spot between faithfulness and realism lies at t0 in [0.3, 0.6].
"""

from __future__ import annotations

import torch
from diffusers import StableDiffusionImg2ImgPipeline

from editlab.methods.base import EditMethod
from editlab.types import Condition, EditOutput, LearningStrategy, Sample, TaskType, Taxonomy


class SDEdit(EditMethod):
    name = "sdedit"
    taxonomy = Taxonomy(
        learning_strategy=LearningStrategy.TRAINING_FREE,
        conditions=(Condition.PROMPT_PAIR,),
        tasks=tuple(TaskType),
        paper="Meng et al., SDEdit, ICLR 2022",
    )

    def __init__(self, strength: float = 0.5, guidance_scale: float | None = None,
                 num_inference_steps: int | None = None) -> None:
        super().__init__(strength=strength, guidance_scale=guidance_scale, num_inference_steps=num_inference_steps)
        if not 0.0 < strength <= 1.0:
            raise ValueError(f"strength must be in (0, 1], got {strength}")
        self.strength = strength
        self.guidance_scale = guidance_scale
        self.num_inference_steps = num_inference_steps

    def setup(self, backbone, cache_dir=None) -> None:
        super().setup(backbone, cache_dir)
        self.pipe = backbone.pipeline(StableDiffusionImg2ImgPipeline)

    def edit(self, sample: Sample, generator: torch.Generator) -> EditOutput:
        bb = self.backbone
        # 1. Check inputs: the source is resized to the backbone's working resolution by the runner
        steps = self.num_inference_steps or bb.num_inference_steps
        guidance = self.guidance_scale if self.guidance_scale is not None else bb.guidance_scale
        # 2. Noise to t0 = strength * T and denoise with the target prompt
        image = self.pipe(
            prompt=sample.target_prompt,
            image=sample.source_image,
            strength=self.strength,
            num_inference_steps=steps,
            guidance_scale=guidance,
            generator=generator,
        ).images[0]
        return EditOutput(image=image, info={"steps_run": int(steps * self.strength)})
