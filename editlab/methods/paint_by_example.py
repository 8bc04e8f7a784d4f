"""Paint by Example: Exemplar-based Image Editing with Diffusion Models (Yang et al., CVPR 2023).

An SD-inpainting-shaped UNet (9 input channels) whose cross-attention is conditioned on a CLIP image embedding of
a reference (exemplar) image instead of text: the masked region is repainted with the reference's content,
adapted to the scene. Implemented with diffusers' ``PaintByExamplePipeline``.

Weights: the method needs the authors' public model (``Fantasy-Studio/Paint-by-Example``, set by ``pretrained``):
a reference-conditioned UNet and its image encoder. editlab ships no reference-conditioned model for ShapesWorld,
so where those weights are not available (offline) ``setup`` raises :class:`BackboneUnavailable` saying so,
rather than producing a stand-in result. A backbone that itself carries an ``image_encoder`` (and
``feature_extractor``) in ``Backbone.extra`` with a 9-channel UNet, such as the toy variant used in tests, is used
as is.

The ShapesWorld reference-image task: ``object_replacement`` samples carry ``reference_image``, the replacement
object rendered alone, centred on the scene's background; the mask covers the replaced object; the oracle checks
that the object in the mask now has the reference's shape (``edit_acc``) and that nothing else changed
(``preservation``). Other task types carry no reference image and are "not applicable".

Preset ``sd`` (Fantasy-Studio/Paint-by-Example ``scripts/inference.py`` as its README runs it: ``--scale 5``, 50
DDIM steps, 512 px): guidance scale 5, 50 steps, 512 px. The method always runs the public reference-conditioned
model (or a backbone that carries one), so backbones without a preset use the same values.
"""

from __future__ import annotations

import os
from typing import ClassVar

import torch
from diffusers import PaintByExamplePipeline

from editlab.methods.base import EditMethod
from editlab.methods.defaults import fill_unset
from editlab.methods.presets import Preset
from editlab.models.backbone import BackboneUnavailable
from editlab.types import Condition, EditOutput, LearningStrategy, Sample, TaskType, Taxonomy


class PaintByExample(EditMethod):
    name = "paint_by_example"
    taxonomy = Taxonomy(
        learning_strategy=LearningStrategy.TRAINING_BASED,
        conditions=(Condition.REFERENCE_IMAGE, Condition.MASK),
        tasks=(TaskType.OBJECT_REPLACEMENT, TaskType.OBJECT_ADDITION),
        paper="Yang et al., Paint by Example, CVPR 2023",
    )
    presets: ClassVar[dict[str, Preset]] = {
        "sd": Preset(source="Fantasy-Studio/Paint-by-Example scripts/inference.py with its README's --scale 5 "
                            "(50 DDIM steps, 512 px)",
                     settings={"guidance_scale": 5.0, "num_inference_steps": 50, "resolution": 512}),
    }

    def __init__(self, pretrained: str = "Fantasy-Studio/Paint-by-Example", guidance_scale: float | None = None,
                 num_inference_steps: int | None = None, resolution: int | None = None,
                 local_files_only: bool | None = None) -> None:
        super().__init__(pretrained=pretrained, guidance_scale=guidance_scale,
                         num_inference_steps=num_inference_steps, resolution=resolution,
                         local_files_only=local_files_only)
        self.pretrained = pretrained
        self.guidance_scale = guidance_scale
        self.num_inference_steps = num_inference_steps
        self.resolution = resolution
        self.local_files_only = local_files_only

    def setup(self, backbone, cache_dir=None) -> None:
        super().setup(backbone, cache_dir)
        self.preset_record["defaults"] = fill_unset(self, {"guidance_scale": 5.0, "num_inference_steps": 50,
                                                           "resolution": 512})
        if "image_encoder" in backbone.extra:
            # 1a. A reference-conditioned backbone: build the pipeline from its components
            self.pipe = PaintByExamplePipeline(
                vae=backbone.vae, image_encoder=backbone.extra["image_encoder"], unet=backbone.unet,
                scheduler=backbone.scheduler, safety_checker=None,
                feature_extractor=backbone.extra["feature_extractor"], requires_safety_checker=False,
            )
            self.size = backbone.resolution
        else:
            # 1b. Otherwise load the public model (its own VAE, UNet and image encoder)
            self.pipe = self._load_public(backbone)
            self.size = self.resolution
        self.pipe.set_progress_bar_config(disable=True)

    def _load_public(self, backbone) -> PaintByExamplePipeline:
        offline = self.local_files_only
        if offline is None:
            offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false")
        try:
            pipe = PaintByExamplePipeline.from_pretrained(self.pretrained, dtype=backbone.dtype,
                                                          local_files_only=offline, safety_checker=None,
                                                          requires_safety_checker=False)
        except Exception as err:  # a missing snapshot raises several types
            raise BackboneUnavailable(
                f"Paint-by-Example needs public weights: '{self.pretrained}' could not be loaded "
                f"({type(err).__name__}: {err}). editlab has no offline reference-conditioned model, so this method "
                f"cannot run here. Download the model once elsewhere (`huggingface-cli download {self.pretrained}`) "
                f"and copy the Hugging Face cache (~/.cache/huggingface) here, or set method.pretrained=/path/to/model."
            ) from err
        return pipe.to(backbone.device)

    def edit(self, sample: Sample, generator: torch.Generator) -> EditOutput:
        # 2. Repaint the masked region conditioned on the reference image's CLIP embedding
        image = self.pipe(
            example_image=sample.reference_image,
            image=sample.source_image,
            mask_image=sample.mask,
            height=self.size,
            width=self.size,
            num_inference_steps=self.num_inference_steps,
            guidance_scale=self.guidance_scale,
            generator=generator,
        ).images[0]
        return EditOutput(image=image)
