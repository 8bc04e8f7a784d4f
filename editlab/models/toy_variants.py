"""Toy-size variants of the toy backbone for methods that need a specialised UNet, with random weights.

* ``inpaint``: a 9-channel UNet (noisy latents + mask + masked-image latents), as SD inpainting uses;
* ``ip2p``: an 8-channel UNet (noisy latents + source-image latents), as InstructPix2Pix uses;
* ``paint_by_example``: a 9-channel UNet conditioned on a tiny CLIP-vision image encoder
  (``PaintByExampleImageEncoder``), stored with its feature extractor in ``Backbone.extra``.

And a toy backbone with **SD 1.5's exact UNet topology** (:func:`toy_sd15_backbone`, config ``toy_sd15``): the
SD 1.5 UNet configuration (:data:`editlab.models.topology.SD15_UNET_CONFIG`: the same blocks, two layers per
block, attention at latent /1, /2, /4 and in the mid block, 8 heads at every level) with channel widths scaled
down to (32, 64, 128, 128), at SD's 512 px (64x64 latents), with the ``sd`` preset: every method runs its paper
preset on it and its layer choices resolve as on SD 1.5. The variants above take ``topology="sd15"`` too.

Same purpose as :mod:`editlab.models.toy`: exercise the code paths in tests; they edit nothing.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers import UNet2DConditionModel

from editlab.models.backbone import Backbone, place_modules, resolve_device, resolve_dtype
from editlab.models.topology import SD15_UNET_CONFIG
from editlab.models.toy import toy_components

VARIANTS: dict[str, int] = {"inpaint": 9, "ip2p": 8, "paint_by_example": 9}
TOPOLOGIES = ("toy", "sd15")
#: SD 1.5's (320, 640, 1280, 1280) scaled down (head width 4, 8, 16 with SD's 8 heads per level)
SD15_TOY_CHANNELS = (32, 64, 128, 128)


def sd15_toy_unet(seed: int = 0, in_channels: int = 4, cross_attention_dim: int = 32) -> UNet2DConditionModel:
    """A random UNet with SD 1.5's topology (its config with narrower channels and the toy text width)."""
    torch.manual_seed(seed)
    config = {**SD15_UNET_CONFIG, "in_channels": in_channels, "block_out_channels": SD15_TOY_CHANNELS,
              "cross_attention_dim": cross_attention_dim}
    return UNet2DConditionModel(**config).eval()


def widen_unet(unet: UNet2DConditionModel, in_channels: int, seed: int = 0) -> UNet2DConditionModel:
    """A UNet with ``unet``'s architecture but ``in_channels`` inputs (fresh seeded random weights)."""
    config = {k: v for k, v in dict(unet.config).items() if not k.startswith("_")}
    torch.manual_seed(seed)
    return UNet2DConditionModel.from_config({**config, "in_channels": in_channels}).eval()


def toy_image_encoder(seed: int = 0, proj_size: int = 32) -> tuple[Any, Any]:
    """A tiny ``PaintByExampleImageEncoder`` (CLIP-vision + mapper) and its 32-px feature extractor."""
    from diffusers.pipelines.deprecated.paint_by_example.image_encoder import PaintByExampleImageEncoder
    from transformers import CLIPImageProcessor, CLIPVisionConfig

    torch.manual_seed(seed)
    config = CLIPVisionConfig(
        hidden_size=32, intermediate_size=37, num_hidden_layers=5, num_attention_heads=4, image_size=32,
        patch_size=4, projection_dim=proj_size,
    )
    encoder = PaintByExampleImageEncoder(config, proj_size=proj_size).eval()
    extractor = CLIPImageProcessor(crop_size=32, size=32)
    return encoder, extractor


def toy_variant_backbone(
    variant: str = "inpaint",
    seed: int = 0,
    guidance_scale: float = 1.5,
    num_inference_steps: int = 10,
    resolution: int = 64,
    device: str = "auto",
    dtype: str = "float32",
    name: str | None = None,
    topology: str = "toy",
    preset: str | None = None,
) -> Backbone:
    """The toy backbone with the UNet of ``variant`` (``inpaint``, ``ip2p`` or ``paint_by_example``); with
    ``topology="sd15"`` the UNet has SD 1.5's topology (:func:`sd15_toy_unet`)."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown toy variant '{variant}', available: {', '.join(VARIANTS)}")
    if topology not in TOPOLOGIES:
        raise ValueError(f"unknown toy topology '{topology}', available: {', '.join(TOPOLOGIES)}")
    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype)
    comps = toy_components(seed)
    if topology == "sd15":
        comps["unet"] = sd15_toy_unet(seed, VARIANTS[variant], comps["text_encoder"].config.hidden_size)
    else:
        comps["unet"] = widen_unet(comps["unet"], VARIANTS[variant], seed)
    extra: dict[str, Any] = {}
    if variant == "paint_by_example":
        encoder, extractor = toy_image_encoder(seed, comps["unet"].config.cross_attention_dim)
        comps["image_encoder"] = encoder
        extra = {"feature_extractor": extractor}
    place_modules(comps, dev, torch_dtype)
    if "image_encoder" in comps:
        extra["image_encoder"] = comps.pop("image_encoder")
    return Backbone(
        name=name or f"toy-{variant}" + ("-sd15" if topology == "sd15" else ""),
        source=f"toy-{variant}(seed={seed}, topology={topology}, random weights)",
        guidance_scale=guidance_scale,
        num_inference_steps=num_inference_steps,
        resolution=resolution,
        device=dev,
        dtype=torch_dtype,
        preset=preset,
        extra=extra,
        **comps,
    )


def toy_sd15_backbone(
    seed: int = 0,
    guidance_scale: float = 7.5,
    num_inference_steps: int = 2,
    resolution: int = 512,
    device: str = "auto",
    dtype: str = "float32",
    name: str = "toy-sd15",
    preset: str | None = "sd",
) -> Backbone:
    """Random toy components with SD 1.5's UNet topology at SD's 512 px, carrying the ``sd`` preset."""
    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype)
    comps = toy_components(seed)
    comps["unet"] = sd15_toy_unet(seed, 4, comps["text_encoder"].config.hidden_size)
    place_modules(comps, dev, torch_dtype)
    return Backbone(
        name=name,
        source=f"toy-sd15(seed={seed}, SD 1.5 UNet topology, random weights)",
        guidance_scale=guidance_scale,
        num_inference_steps=num_inference_steps,
        resolution=resolution,
        device=dev,
        dtype=torch_dtype,
        family="sd",
        preset=preset,
        **comps,
    )
