"""DDIM inversion + prompt swap: the "no control" baseline of inversion-based editing.

Invert the source image with the source prompt (DDIM inversion at guidance 1, as in Mokady et al. 2023),
then denoise the inverted noise with the target prompt at the backbone's guidance scale. Every
attention-control editor (Prompt-to-Prompt, MasaCtrl, ...) is measured against this baseline: without
control, the structure of the source drifts as soon as guidance is > 1.
"""

from __future__ import annotations

import torch
from diffusers import StableDiffusionPipeline

from editlab.methods.base import EditMethod
from editlab.methods.common import ddim_invert, ddim_scheduler, encode_image, encode_prompt
from editlab.types import Condition, EditOutput, LearningStrategy, Sample, TaskType, Taxonomy


class DDIMSwap(EditMethod):
    name = "ddim_swap"
    taxonomy = Taxonomy(
        learning_strategy=LearningStrategy.TRAINING_FREE,
        conditions=(Condition.PROMPT_PAIR,),
        tasks=tuple(TaskType),
        paper="Song et al., DDIM, ICLR 2021 (inversion); prompt-swap baseline of Hertz et al., 2023",
    )

    def __init__(self, guidance_scale: float | None = None, num_inference_steps: int | None = None) -> None:
        super().__init__(guidance_scale=guidance_scale, num_inference_steps=num_inference_steps)
        self.guidance_scale = guidance_scale
        self.num_inference_steps = num_inference_steps

    def setup(self, backbone, cache_dir=None) -> None:
        super().setup(backbone, cache_dir)
        self.pipe = backbone.pipeline(StableDiffusionPipeline, scheduler=ddim_scheduler(backbone))

    def edit(self, sample: Sample, generator: torch.Generator) -> EditOutput:
        bb = self.backbone
        steps = self.num_inference_steps or bb.num_inference_steps
        guidance = self.guidance_scale if self.guidance_scale is not None else bb.guidance_scale
        # 1. Encode the source image and prompt
        latents = encode_image(bb, sample.source_image)
        source_embeds = encode_prompt(bb, [sample.source_prompt])
        # 2. DDIM inversion with the source prompt at guidance 1
        x_t = ddim_invert(bb, latents, source_embeds, steps)[-1]
        # 3. Denoise the inverted noise with the target prompt
        image = self.pipe(
            prompt=sample.target_prompt,
            latents=x_t,
            num_inference_steps=steps,
            guidance_scale=guidance,
            height=bb.resolution,
            width=bb.resolution,
            generator=generator,
        ).images[0]
        return EditOutput(image=image)
