"""InstructPix2Pix: Learning to Follow Image Editing Instructions (Brooks et al., CVPR 2023).

A UNet fine-tuned on (source image, instruction, edited image) triplets takes the source image's latents as 4
extra input channels and the instruction as its text condition. Sampling uses two classifier-free guidance
scales, one for the text (``guidance_scale``, s_T) and one for the image (``image_guidance_scale``, s_I).
Implemented with diffusers' ``StableDiffusionInstructPix2PixPipeline`` built from the backbone's components,
so the backbone must carry an 8-channel instruction UNet: the method config brings its own ``backbone`` node
(editlab's ShapesWorld instruction model by default; ``configs/backbone/instruct_pix2pix.yaml`` and
``magicbrush.yaml`` name the public weights of the paper and of MagicBrush, Zhang et al., NeurIPS 2023).

Preset ``sd`` (timothybrooks/instruct-pix2pix ``edit_cli.py``: ``--steps 100 --cfg-text 7.5 --cfg-image 1.5``;
paper, Sec. 4): s_T = 7.5, s_I = 1.5, 100 steps. Backbones without a preset use the text scale and step count of
the backbone (its ``editlab.json`` for editlab's models) and s_I = 1.5, which is also what editlab's ShapesWorld
instruction model was trained and evaluated with. The sampler is the backbone's scheduler (the official
script's Euler ancestral for the public weights, whose scheduler config names it).
"""

from __future__ import annotations

from typing import ClassVar

import torch
from diffusers import StableDiffusionInstructPix2PixPipeline

from editlab.methods.base import EditMethod
from editlab.methods.defaults import fill_unset
from editlab.methods.inpaint import require_in_channels
from editlab.methods.presets import Preset
from editlab.types import Condition, EditOutput, LearningStrategy, Sample, TaskType, Taxonomy


class InstructPix2Pix(EditMethod):
    name = "instruct_pix2pix"
    taxonomy = Taxonomy(
        learning_strategy=LearningStrategy.TRAINING_BASED,
        conditions=(Condition.INSTRUCTION,),
        tasks=tuple(TaskType),
        paper="Brooks et al., InstructPix2Pix, CVPR 2023",
    )
    presets: ClassVar[dict[str, Preset]] = {
        "sd": Preset(source="timothybrooks/instruct-pix2pix edit_cli.py (--steps 100 --cfg-text 7.5 --cfg-image 1.5)",
                     settings={"guidance_scale": 7.5, "image_guidance_scale": 1.5, "num_inference_steps": 100}),
    }

    def __init__(self, guidance_scale: float | None = None, image_guidance_scale: float | None = None,
                 num_inference_steps: int | None = None) -> None:
        super().__init__(guidance_scale=guidance_scale, image_guidance_scale=image_guidance_scale,
                         num_inference_steps=num_inference_steps)
        self.guidance_scale = guidance_scale
        self.image_guidance_scale = image_guidance_scale
        self.num_inference_steps = num_inference_steps

    def setup(self, backbone, cache_dir=None) -> None:
        super().setup(backbone, cache_dir)
        self.preset_record["defaults"] = fill_unset(self, {
            "guidance_scale": backbone.guidance_scale, "image_guidance_scale": 1.5,
            "num_inference_steps": backbone.num_inference_steps})
        require_in_channels(backbone, 8, "InstructPix2Pix", "Use an instruction-editing backbone, e.g. the method "
                            "config's own `backbone` node (weights/shapesworld/ip2p) or configs/backbone/"
                            "instruct_pix2pix.yaml.")
        self.pipe = backbone.pipeline(StableDiffusionInstructPix2PixPipeline)

    def edit(self, sample: Sample, generator: torch.Generator) -> EditOutput:
        steps, guidance = self.num_inference_steps, self.guidance_scale
        # 1. Condition on the instruction (text) and the source image (latents concatenated to the input)
        # 2. Denoise with the two guidance scales: eps_uncond + s_I (eps_img - eps_uncond) + s_T (eps_full - eps_img)
        image = self.pipe(
            prompt=sample.instruction,
            image=sample.source_image,
            num_inference_steps=steps,
            guidance_scale=guidance,
            image_guidance_scale=self.image_guidance_scale,
            generator=generator,
        ).images[0]
        return EditOutput(image=image, info={"guidance_scale": guidance,
                                             "image_guidance_scale": self.image_guidance_scale})
