"""Backbones: the diffusers components every method is built from.

One code path serves every backbone: a Stable-Diffusion-style model given by hub id or local folder is
loaded with the stock diffusers classes (``StableDiffusionPipeline.from_pretrained``); editlab's shipped
ShapesWorld models are such folders. Methods receive a :class:`Backbone`, never a hub id.

Any other diffusers pipeline's components load the same way (``pipeline: auto`` reads the class from the folder's
``model_index.json``): components beyond the SD five (``transformer``, ``text_encoder_2``, ``tokenizer_3``,
``processor``, ...) are kept under their pipeline names in :attr:`Backbone.parts`, so :meth:`Backbone.pipeline`
builds any pipeline of the family (:mod:`editlab.models.families` maps tasks to pipeline classes).

A backbone names its **family** (the model architecture: ``sd`` for SD-1.x/2.x-shaped UNets; ``sdxl``, ``sd3``,
``flux``, ``flux-kontext``, ``qwen-image-edit``, ... in :mod:`editlab.models.families`) and its
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
    #: Pipeline components beyond the SD five, by their pipeline names (``transformer``, ``text_encoder_2``, ...).
    parts: dict[str, Any] = field(default_factory=dict)
    #: Pipeline-call defaults the model records for itself (``editlab.json`` ``pipeline_kwargs``).
    call_kwargs: dict[str, Any] = field(default_factory=dict)
    #: Speed switches (:mod:`editlab.models.speed`), recorded in ``backbone.json``.
    speed: dict[str, Any] = field(default_factory=dict)
    #: The diffusers pipeline class the weights were read with (``None`` for components built in code).
    pipeline_class: str | None = None
    #: ``fixed`` or ``preferred_area`` (:mod:`editlab.models.families`); ``None`` = the family's.
    resolution_policy: str | None = None

    @property
    def transformer(self) -> Any:
        return self.parts.get("transformer")

    @property
    def denoiser(self) -> Any:
        """The network the sampling loop calls: the UNet, else the transformer."""
        return self.unet if self.unet is not None else self.transformer

    def components(self) -> dict[str, Any]:
        """Every loaded component by its pipeline name (the SD five, plus :attr:`parts`)."""
        comps = {
            "vae": self.vae,
            "text_encoder": self.text_encoder,
            "tokenizer": self.tokenizer,
            "unet": self.unet,
            "scheduler": self.scheduler,
        }
        if self.unet is None:
            del comps["unet"]
        return comps | self.parts

    def pipeline(self, cls: type, **overrides: Any) -> Any:
        """Build a diffusers pipeline of class ``cls`` from these components (no safety checker, no watermark).

        Only the components ``cls`` takes are passed; one it requires that this backbone lacks is an error naming
        it. CPU offload (``speed.offload``) is applied to the pipeline."""
        import inspect

        from editlab.models.speed import apply_pipeline_speed

        params = inspect.signature(cls.__init__).parameters
        unknown = set(overrides) - set(params)
        if unknown:
            raise TypeError(f"{cls.__name__} takes no component(s) {sorted(unknown)}")
        kwargs = {k: v for k, v in (self.components() | overrides).items() if k in params}
        if "safety_checker" in params:
            for key, value in (("safety_checker", None), ("feature_extractor", None),
                               ("requires_safety_checker", False)):
                kwargs.setdefault(key, value)
        if "add_watermarker" in params:  # SDXL's invisible watermark would change every output
            kwargs.setdefault("add_watermarker", False)
        missing = [n for n, p in params.items() if n != "self" and p.default is inspect.Parameter.empty
                   and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and n not in kwargs]
        if missing:
            raise ValueError(f"{cls.__name__} needs component(s) {', '.join(missing)}, which backbone '{self.name}' "
                             f"(family {self.family}) does not have")
        pipe = cls(**kwargs)
        pipe.set_progress_bar_config(disable=True)
        return apply_pipeline_speed(pipe, self)

    def modules(self) -> list[torch.nn.Module]:
        """The distinct ``nn.Module`` components (a module used in two slots counts once)."""
        seen: dict[int, torch.nn.Module] = {}
        for comp in self.components().values():
            if isinstance(comp, torch.nn.Module):
                seen.setdefault(id(comp), comp)
        return list(seen.values())

    def weight_files(self) -> list[Path]:
        """The local weight files this backbone was loaded from (empty for components built in code)."""
        from editlab.files import model_weight_files

        return model_weight_files(self.source)

    def num_parameters(self) -> int:
        return sum(p.numel() for m in self.modules() for p in m.parameters())

    def describe(self) -> dict[str, Any]:
        extra: dict[str, Any] = {}
        if self.parts or self.family != "sd":
            extra = {
                "pipeline_class": self.pipeline_class,
                "denoiser": type(self.denoiser).__name__,
                "components": sorted(k for k, v in self.components().items() if v is not None),
                "resolution_policy": self.resolution_policy,
                "call_kwargs": self.call_kwargs,
            }
        if self.speed:
            extra["speed"] = self.speed
        return extra | {
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


def place_modules(components: dict[str, Any], device: torch.device, dtype: torch.dtype) -> None:
    """Move every ``torch.nn.Module`` among ``components`` to ``device`` and, unless float32, to ``dtype``."""
    for component in components.values():
        if isinstance(component, torch.nn.Module):
            component.to(device)
            if dtype != torch.float32:
                component.to(dtype)


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
    speed: dict[str, Any] | None = None,
    resolution_policy: str | None = None,
) -> Backbone:
    """Load a diffusers model (any pipeline) from a hub id or local folder.

    Sampling defaults come from the arguments, else from an ``editlab.json`` in the folder (editlab's own
    models record their recommended guidance scale and step count there, and pipeline-call defaults under
    ``pipeline_kwargs``), else the family's (:mod:`editlab.models.families`; SD: 7.5, 50, 512).
    ``pipeline`` names the diffusers pipeline class that reads the folder (e.g.
    ``StableDiffusionInstructPix2PixPipeline`` for a specialised UNet; ``auto``: the class in its
    ``model_index.json``); ``family`` is a family name or ``auto`` (from that class). Components that
    ``model_index.json`` marks absent (``[null, null]``, e.g. SD3's T5) are loaded as ``None``. ``speed``: the
    switches of :mod:`editlab.models.speed`. ``preset`` is described in the module docstring.
    """
    import diffusers

    from editlab.models.families import family_of_class, get_family, read_model_index
    from editlab.models.speed import apply_speed, normalize_speed

    source = _resolve_source(pretrained)
    is_local = Path(source).is_dir()
    if local_files_only is None:
        local_files_only = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false")
    index: dict[str, Any] = {}
    if pipeline == "auto" or family == "auto" or (family != "sd" and is_local):
        try:
            index = read_model_index(source, local_files_only)
        except FileNotFoundError as err:
            raise BackboneUnavailable(str(err)) from err
    if pipeline == "auto":
        pipeline = str(index.get("_class_name"))
    if family == "auto":
        family = family_of_class(str(index.get("_class_name", pipeline)))
    fam = get_family(family)
    speed = normalize_speed(speed)
    if not hasattr(diffusers, pipeline):
        raise ValueError(f"unknown diffusers pipeline class '{pipeline}'")
    pipeline_cls = getattr(diffusers, pipeline)
    torch_dtype = resolve_dtype(dtype)
    load_kwargs: dict[str, Any] = {"safety_checker": None, "requires_safety_checker": False} if family == "sd" else {
        k: None for k, v in index.items() if not k.startswith("_") and v in ([None, None], (None, None))}
    try:
        pipe = pipeline_cls.from_pretrained(
            source,
            dtype=torch_dtype,
            variant=variant,
            local_files_only=local_files_only,
            **load_kwargs,
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
    if speed["offload"] == "none":
        pipe.to(dev)
    comps = dict(pipe.components)
    core = {k: comps.pop(k, None) for k in ("vae", "text_encoder", "tokenizer", "unet", "scheduler")}
    optional = set(getattr(pipeline_cls, "_optional_components", []))
    parts = {} if family == "sd" else {k: v for k, v in comps.items() if v is not None or k not in optional}
    backbone = Backbone(
        name=name or Path(pretrained).name,
        source=pretrained,
        **core,
        guidance_scale=guidance_scale if guidance_scale is not None else recommended.get(
            "guidance_scale", fam.guidance_scale),
        num_inference_steps=num_inference_steps
        if num_inference_steps is not None
        else recommended.get("num_inference_steps", fam.num_inference_steps),
        resolution=resolution if resolution is not None else recommended.get("resolution", fam.resolution),
        device=dev,
        dtype=torch_dtype,
        family=family,
        preset=preset,
        parts=parts,
        call_kwargs=dict(recommended.get("pipeline_kwargs", {})),
        speed=speed | {"dtype": str(torch_dtype).replace("torch.", "")},
        pipeline_class=pipeline,
        resolution_policy=resolution_policy or fam.resolution_policy,
    )
    apply_speed(backbone)
    return backbone


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
    place_modules(comps, dev, torch_dtype)
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
