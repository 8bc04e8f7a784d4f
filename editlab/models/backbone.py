"""Backbones: the diffusers components every method is built from.

One code path serves every backbone: a Stable-Diffusion-style model given by hub id or local folder is
loaded with the stock diffusers classes (``StableDiffusionPipeline.from_pretrained``); editlab's shipped
ShapesWorld models are such folders. Methods receive a :class:`Backbone`, never a hub id.

A backbone names its **family** (the model architecture: ``sd`` for SD-1.x/2.x-shaped UNets) and its
**preset** (which published settings apply to it: ``sd`` for Stable Diffusion's own weights, whose papers'
official runs give steps, guidance and thresholds; ``None`` for models with their own recommended scales, such
as the ShapesWorld models and the toy components). Methods declare the families they support
(:attr:`editlab.methods.base.EditMethod.families`) and carry paper presets per preset name
(:mod:`editlab.methods.presets`).

This module is below methods, metrics and datasets: it never imports the runner (``editlab.bench``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from editlab import ROOT


class BackboneUnavailable(RuntimeError):
    """The backbone's weights cannot be loaded (typically: not available offline)."""


@dataclass
class Backbone:
    """Diffusers components plus the sampling defaults recommended for this model."""

    name: str
    source: str
    vae: Any
    text_encoder: Any
    tokenizer: Any
    unet: Any
    scheduler: Any
    guidance_scale: float = 7.5
    num_inference_steps: int = 50
    resolution: int = 512
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    dtype: torch.dtype = torch.float32
    family: str = "sd"
    preset: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def components(self) -> dict[str, Any]:
        return {
            "vae": self.vae,
            "text_encoder": self.text_encoder,
            "tokenizer": self.tokenizer,
            "unet": self.unet,
            "scheduler": self.scheduler,
        }

    def pipeline(self, cls: type, **overrides: Any) -> Any:
        """Build a diffusers pipeline of class ``cls`` from these components (no safety checker)."""
        kwargs = self.components() | overrides
        pipe = cls(**kwargs, safety_checker=None, feature_extractor=None, requires_safety_checker=False)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def weight_files(self) -> list[Path]:
        """The local weight files this backbone was loaded from (empty for components built in code)."""
        from editlab.files import model_weight_files

        return model_weight_files(self.source)

    def num_parameters(self) -> int:
        return sum(p.numel() for m in (self.vae, self.text_encoder, self.unet) for p in m.parameters())

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "source": self.source,
            "guidance_scale": self.guidance_scale,
            "num_inference_steps": self.num_inference_steps,
            "resolution": self.resolution,
            "dtype": str(self.dtype).replace("torch.", ""),
            "family": self.family,
            "preset": self.preset,
            "parameters": self.num_parameters(),
        }


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present, else CPU."""
    if device == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        return torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}")  # one process per GPU under torchrun
    return torch.device(device)


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    table = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
             "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
    if dtype not in table:
        raise ValueError(f"unknown dtype '{dtype}', available: {', '.join(table)}")
    return table[dtype]


def _resolve_source(pretrained: str) -> str:
    """Relative local paths are taken from the repository root, so configs work from any directory."""
    p = Path(os.path.expanduser(pretrained))
    if p.is_absolute() or p.exists():
        return str(p)
    if (ROOT / p).exists():
        return str(ROOT / p)
    return pretrained


def load_backbone(
    pretrained: str,
    name: str | None = None,
    guidance_scale: float | None = None,
    num_inference_steps: int | None = None,
    resolution: int | None = None,
    device: str = "auto",
    dtype: str = "float32",
    variant: str | None = None,
    local_files_only: bool | None = None,
    pipeline: str = "StableDiffusionPipeline",
    family: str = "sd",
    preset: str | None = None,
) -> Backbone:
    """Load a Stable-Diffusion-style model from a hub id or local folder.

    Sampling defaults come from the arguments, else from an ``editlab.json`` in the folder (editlab's own
    models record their recommended guidance scale and step count there), else SD's (7.5, 50, 512).
    ``pipeline`` names the diffusers pipeline class that reads the folder (e.g.
    ``StableDiffusionInstructPix2PixPipeline`` or ``StableDiffusionInpaintPipeline`` for specialised UNets).
    ``family`` and ``preset`` are described in the module docstring.
    """
    import diffusers

    pipeline_cls = getattr(diffusers, pipeline)

    source = _resolve_source(pretrained)
    is_local = Path(source).is_dir()
    if local_files_only is None:
        local_files_only = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false")
    torch_dtype = resolve_dtype(dtype)
    try:
        pipe = pipeline_cls.from_pretrained(
            source,
            dtype=torch_dtype,
            safety_checker=None,
            requires_safety_checker=False,
            variant=variant,
            local_files_only=local_files_only,
        )
    except Exception as err:  # diffusers raises several types for a missing snapshot
        if is_local:
            raise BackboneUnavailable(f"could not load the diffusers model folder '{source}': {err}") from err
        raise BackboneUnavailable(
            f"the model '{pretrained}' is not available: {type(err).__name__}: {err}\n"
            f"editlab loads it with diffusers, which downloads hub ids when online. Offline, either download it "
            f"once elsewhere (`huggingface-cli download {pretrained}`) and copy the Hugging Face cache "
            f"(~/.cache/huggingface) here, or point the backbone at a local folder: backbone.pretrained=/path/to/model"
        ) from err
    recommended: dict[str, Any] = {}
    if is_local and (Path(source) / "editlab.json").exists():
        recommended = json.loads((Path(source) / "editlab.json").read_text())
    dev = resolve_device(device)
    pipe.to(dev)
    return Backbone(
        name=name or Path(pretrained).name,
        source=pretrained,
        vae=pipe.vae,
        text_encoder=pipe.text_encoder,
        tokenizer=pipe.tokenizer,
        unet=pipe.unet,
        scheduler=pipe.scheduler,
        guidance_scale=guidance_scale if guidance_scale is not None else recommended.get("guidance_scale", 7.5),
        num_inference_steps=num_inference_steps
        if num_inference_steps is not None
        else recommended.get("num_inference_steps", 50),
        resolution=resolution if resolution is not None else recommended.get("resolution", 512),
        device=dev,
        dtype=torch_dtype,
        family=family,
        preset=preset,
    )


def backbone_from_config(cfg: Any, device: str = "auto", dtype: str = "float32") -> Backbone:
    """Instantiate a backbone config, surfacing :class:`BackboneUnavailable` rather than Hydra's wrapper."""
    from hydra.utils import instantiate

    try:
        return instantiate(cfg, device=device, dtype=dtype)
    except Exception as err:
        cause: BaseException | None = err
        while cause is not None and not isinstance(cause, BackboneUnavailable):
            cause = cause.__cause__
        if cause is not None:
            raise cause from None
        raise


def toy_backbone(
    seed: int = 0,
    guidance_scale: float = 1.5,
    num_inference_steps: int = 10,
    resolution: int = 64,
    device: str = "auto",
    dtype: str = "float32",
    name: str = "toy",
    preset: str | None = None,
) -> Backbone:
    """Random toy-size SD components (see :mod:`editlab.models.toy`); for tests and smoke runs only."""
    from editlab.models.toy import toy_components

    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype)
    comps = toy_components(seed)
    for key in ("vae", "text_encoder", "unet"):
        comps[key].to(dev)
        if torch_dtype != torch.float32:
            comps[key].to(torch_dtype)
    return Backbone(
        name=name,
        source=f"toy(seed={seed}, random weights)",
        guidance_scale=guidance_scale,
        num_inference_steps=num_inference_steps,
        resolution=resolution,
        device=dev,
        dtype=torch_dtype,
        preset=preset,
        **comps,
    )
