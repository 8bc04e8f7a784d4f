"""LEDITS++: Limitless Image Editing using Text-to-Image Models (Brack et al., CVPR 2024).

1. Inversion: edit-friendly DDPM inversion (Huberman-Spiegelglas et al., CVPR 2024) of the source, recording the
   noise map of every step so that sampling with them reproduces the source exactly.
2. Semantic guidance: sampling with those noise maps, guided towards the target prompt and away from the
   source prompt (each an "edit concept"), each guidance term restricted to an implicit mask: the intersection
   of the top quantile of the concept's cross-attention map (at latent / 4) and of its noise-guidance magnitude.

Implemented with diffusers' ``LEditsPPPipelineStableDiffusion`` built from the backbone's components, with two
issues of that pipeline handled here:

* With ``DDIMScheduler``, ``invert`` passes a float timestep to ``DDIMScheduler.add_noise``, which indexes
  ``alphas_cumprod`` with it (IndexError); ``scheduler="ddim"`` uses a DDIM scheduler that casts it to an integer.
  The default is the paper's multistep SDE DPM-Solver++ (2nd order), which has no such problem.
* The implicit masks need cross-attention maps at latent / 4 (image / 32): the pipeline averages the maps of the
  encoder's and decoder's cross-attention at that resolution (on SD 1.5: ``down_blocks[2].attentions[0, 1]`` and
  ``up_blocks[1].attentions[0, 1, 2]``, the mid block excluded). The method resolves those layers by role on the
  backbone's topology at setup (recorded in ``method.json`` under ``layers``): a UNet without such a block (or a
  latent size not divisible by 4) cannot provide them and the pipeline would fail mid-edit. With
  ``masks="auto"`` (default) the method then edits without masks (quantile thresholding of the guidance only)
  and says so in every record's ``info["masks"]``; ``masks=true`` raises at setup instead, ``masks=false``
  always edits without masks.

The pipeline swaps the UNet's attention processors to record cross-attention; they are restored after each edit,
so the shared backbone is left as it was. The implicit mask (the latent cells where the guidance of any concept
acted in at least half as many steps as in the most active cell) is returned as the ``inferred_mask`` extra image,
with its IoU with the sample's true mask when present.

Preset ``sd`` (diffusers' ``LEditsPPPipelineStableDiffusion``, contributed by the authors): edit guidance 5,
threshold 0.9 (top 10%), skip 0.15 of the schedule, source guidance 3.5 during inversion, 30 inversion steps,
the multistep SDE DPM-Solver++. Backbones without a preset use the same values with their own step count.
``remove_source`` (guide away from the source prompt too) is editlab's use of the pipeline's reverse concepts for
prompt pairs; it is not a setting of the paper's runs.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, LEditsPPPipelineStableDiffusion

from editlab.methods.base import EditMethod
from editlab.methods.defaults import fill_unset
from editlab.methods.diffedit import mask_report, upsample_mask
from editlab.methods.presets import Preset
from editlab.models.topology import Role, Topology
from editlab.types import Condition, EditOutput, LearningStrategy, Sample, TaskType, Taxonomy


class IntTimestepDDIMScheduler(DDIMScheduler):
    """DDIM whose ``add_noise`` accepts float timesteps (LEDITS++'s ``invert`` passes ``torch.Tensor([t])``)."""

    def add_noise(self, original_samples: torch.Tensor, noise: torch.Tensor,
                  timesteps: torch.Tensor) -> torch.Tensor:
        return super().add_noise(original_samples, noise, timesteps.long())


#: the cross-attention maps LEDITS++ aggregates for its masks: encoder and decoder at latent / 4 (image / 32)
MASK_MAPS = (Role("transformer", "down", (4,)), Role("transformer", "up", (4,)))


def cross_attention_scales(unet) -> set[int]:
    """Downsampling factors (relative to the latent) at which the UNet's encoder or decoder has cross-attention."""
    topology = Topology.of(unet)
    return {b.downscale for b in topology.transformers if b.place in ("down", "up")}


def mask_layers(unet) -> list[str]:
    """The cross-attention layers whose maps LEDITS++'s masks average (empty when the UNet has none)."""
    topology = Topology.of(unet)
    names = []
    for role in MASK_MAPS:
        try:
            names += [b.processor(cross=True) for b in topology.select(role)]
        except ValueError:
            continue
    return names


def attention_masks_unsupported(unet, latent_size: int) -> str | None:
    """Why the UNet cannot provide LEDITS++'s cross-attention masks at latent / 4, or None when it can."""
    if latent_size % 4:
        return f"the latent size {latent_size} is not divisible by 4"
    if not mask_layers(unet):
        return (f"the UNet has no cross-attention at latent / 4 ({latent_size // 4} px); its cross-attention is at "
                f"latent / {sorted(cross_attention_scales(unet))}")
    return None


class LEditsPP(EditMethod):
    name = "ledits_pp"
    taxonomy = Taxonomy(
        learning_strategy=LearningStrategy.TRAINING_FREE,
        conditions=(Condition.PROMPT_PAIR,),
        tasks=tuple(TaskType),
        paper="Brack et al., LEDITS++, CVPR 2024",
    )
    presets: ClassVar[dict[str, Preset]] = {
        "sd": Preset(source="huggingface/diffusers pipelines/ledits_pp/pipeline_leditspp_stable_diffusion.py "
                            "defaults of invert() and __call__() (the authors' implementation)",
                     settings={"scheduler": "dpmsolver++", "edit_guidance_scale": 5.0, "edit_threshold": 0.9,
                               "skip": 0.15, "source_guidance_scale": 3.5, "num_inference_steps": 30}),
    }

    def __init__(self, scheduler: str | None = None, masks: bool | str = "auto",
                 edit_guidance_scale: float | None = None, edit_threshold: float | None = None,
                 skip: float | None = None, source_guidance_scale: float | None = None, remove_source: bool = True,
                 num_inference_steps: int | None = None) -> None:
        super().__init__(scheduler=scheduler, masks=masks, edit_guidance_scale=edit_guidance_scale,
                         edit_threshold=edit_threshold, skip=skip, source_guidance_scale=source_guidance_scale,
                         remove_source=remove_source, num_inference_steps=num_inference_steps)
        if scheduler is not None and scheduler not in ("dpmsolver++", "ddim"):
            raise ValueError(f"scheduler must be 'dpmsolver++' or 'ddim', got {scheduler!r}")
        if masks not in ("auto", True, False):
            raise ValueError(f"masks must be 'auto', true or false, got {masks!r}")
        if skip is not None and not 0.0 <= skip < 1.0:
            raise ValueError(f"skip must be in [0, 1), got {skip}")
        self.scheduler = scheduler
        self.masks = masks
        self.edit_guidance_scale = edit_guidance_scale
        self.edit_threshold = edit_threshold
        self.skip = skip
        self.source_guidance_scale = source_guidance_scale
        self.remove_source = remove_source
        self.num_inference_steps = num_inference_steps

    def setup(self, backbone, cache_dir=None) -> None:
        super().setup(backbone, cache_dir)
        self.preset_record["defaults"] = fill_unset(self, {
            "scheduler": "dpmsolver++", "edit_guidance_scale": 5.0, "edit_threshold": 0.9, "skip": 0.15,
            "source_guidance_scale": 3.5, "num_inference_steps": backbone.num_inference_steps})
        config = backbone.scheduler.config
        if self.scheduler == "ddim":
            scheduler = IntTimestepDDIMScheduler.from_config(config)
        else:
            scheduler = DPMSolverMultistepScheduler.from_config(config, algorithm_type="sde-dpmsolver++",
                                                                solver_order=2)
        self.pipe = backbone.pipeline(LEditsPPPipelineStableDiffusion, scheduler=scheduler)
        latent_size = backbone.resolution // self.pipe.vae_scale_factor
        reason = attention_masks_unsupported(backbone.unet, latent_size)
        if reason is not None and self.masks is True:
            raise ValueError(f"LEDITS++ masks were requested but backbone '{backbone.name}' cannot provide them: "
                             f"{reason}. Set masks=auto or masks=false to edit without them.")
        self.use_masks = self.masks is not False and reason is None
        self.mask_layers = mask_layers(backbone.unet) if self.use_masks else []
        if self.use_masks:
            self.masks_info = "cross-attention and intersect masks"
        elif reason is None:
            self.masks_info = "off (masks=false)"
        else:
            self.masks_info = f"off: backbone '{backbone.name}' cannot provide them ({reason})"

    def describe(self) -> dict[str, Any]:
        """The set-up record, with the cross-attention layers the masks read."""
        return super().describe() | {"layers": {"mask_maps": list(getattr(self, "mask_layers", []))}}

    def edit(self, sample: Sample, generator: torch.Generator) -> EditOutput:
        bb = self.backbone
        steps = self.num_inference_steps
        unet_processors = bb.unet.attn_processors
        try:
            # 1. Edit-friendly inversion of the source, guided by the source prompt
            self.pipe.invert(
                image=sample.source_image,
                source_prompt=sample.source_prompt,
                source_guidance_scale=self.source_guidance_scale,
                num_inversion_steps=steps,
                skip=self.skip,
                height=bb.resolution,
                width=bb.resolution,
                generator=generator,
            )
            # 2. Edit concepts: towards the target prompt, and (by default) away from the source prompt
            concepts = [sample.target_prompt] + ([sample.source_prompt] if self.remove_source else [])
            reverse = [False] + ([True] if self.remove_source else [])
            # 3. Sample with the recorded noise maps under semantic guidance restricted to the implicit masks
            image = self.pipe(
                editing_prompt=concepts,
                reverse_editing_direction=reverse,
                edit_guidance_scale=self.edit_guidance_scale,
                edit_threshold=self.edit_threshold,
                use_cross_attn_mask=self.use_masks,
                use_intersect_mask=self.use_masks,
                generator=generator,
            ).images[0]
        finally:
            bb.unet.set_attn_processor(unet_processors)
        # 4. Report the implicit mask: the cells where guidance acted most often (union over concepts)
        info: dict = {"masks": self.masks_info}
        extras = {}
        activation = self.pipe.activation_mask  # (steps, concepts, batch, channels, h, w)
        if activation is not None:
            frequency = activation[:, :, 0, 0].amax(dim=1).mean(dim=0).numpy()
            pred = (frequency >= 0.5 * frequency.max()) & (frequency > 0)
            size = sample.source_image.size
            extras["inferred_mask"] = upsample_mask(np.asarray(pred), size)
            info |= mask_report(pred, sample.mask, size)
        return EditOutput(image=image, extras=extras, info=info)
