"""Inversion x editor: the training- and fine-tuning-free family of the survey as two independent axes.

PIE-Bench (Ju et al., 2024) compares inversions (DDIM, Null-text, Negative-prompt, Direct, ...) each paired
with editors (Prompt-to-Prompt, MasaCtrl, Plug-and-Play, Pix2Pix-Zero). :class:`InversionEditing` pairs any
inversion of :data:`editlab.registry.INVERSIONS` with any editor of :data:`editlab.registry.EDITORS` that can
use it; a pair that cannot work is rejected when the method is built, before any model is loaded. The
inversion of a source is computed once and reused by every editor and target prompt of that source
(:mod:`editlab.methods.inversion.cache`). The method's name reads ``<editor>+<inversion>`` (e.g. ``p2p+nti``)
and its taxonomy follows its parts: with Null-text inversion it is testing-time fine-tuning, otherwise
training- and fine-tuning-free.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from editlab.methods.base import EditMethod
from editlab.methods.common import ddim_scheduler, decode_latents, encode_image, encode_prompt
from editlab.methods.editors.base import Editor
from editlab.methods.editors.loop import EditRequest, reconstruct
from editlab.methods.inversion.base import Inversion, InversionResult
from editlab.methods.inversion.cache import InversionCache, backbone_fingerprint, image_digest
from editlab.methods.presets import apply_preset
from editlab.registry import EDITORS, INVERSIONS, Registry
from editlab.types import Condition, EditOutput, LearningStrategy, Sample, TaskType, Taxonomy

GENERIC_TAXONOMY = Taxonomy(
    learning_strategy=LearningStrategy.TRAINING_FREE,
    conditions=(Condition.PROMPT_PAIR,),
    tasks=tuple(TaskType),
    paper="inversion x editor (PIE-Bench, Ju et al., ICLR 2024); see configs/inversion and configs/editor",
)


class _PartsTaxonomy:
    """The class reports the family's taxonomy; an instance reports the one of its inversion and editor."""

    def __get__(self, obj: InversionEditing | None, owner: type) -> Taxonomy:
        return GENERIC_TAXONOMY if obj is None else obj._taxonomy


def build_part(registry: Registry, spec: Any) -> Any:
    """An inversion or editor from an instance, a registry name, or a config mapping (``_target_`` or name)."""
    if isinstance(spec, Inversion | Editor):
        return spec
    if isinstance(spec, str):
        return registry.get(spec)()
    if not isinstance(spec, Mapping):
        from omegaconf import DictConfig, OmegaConf

        if not isinstance(spec, DictConfig):
            raise TypeError(f"cannot build {registry.kind} from {spec!r}")
        spec = OmegaConf.to_container(spec, resolve=True)
    spec = dict(spec)
    name = spec.pop("name", None)
    if "_target_" in spec:
        from hydra.utils import instantiate

        return instantiate(spec)
    if name is None:
        raise ValueError(f"{registry.kind} config needs a '_target_' or a 'name'")
    return registry.get(name)(**spec)


def compatible_inversions(editor: Editor) -> list[str]:
    return [n for n in INVERSIONS.names() if editor.incompatibility(INVERSIONS.get(n)()) is None]


class InversionEditing(EditMethod):
    """An inversion paired with an editor; ``inversion`` and ``editor`` are registry names, config mappings
    or instances. ``guidance_scale`` and ``num_inference_steps`` default to the backbone's; ``cache=False``
    inverts every sample afresh."""

    name = "edit"
    taxonomy = _PartsTaxonomy()

    def __init__(self, inversion: Any = "ddim", editor: Any = "p2p", guidance_scale: float | None = None,
                 num_inference_steps: int | None = None, cache: bool = True) -> None:
        super().__init__(guidance_scale=guidance_scale, num_inference_steps=num_inference_steps, cache=cache)
        self.inversion: Inversion = build_part(INVERSIONS, inversion)
        self.editor: Editor = build_part(EDITORS, editor)
        # 1. Reject pairs that cannot work, at construction (config time)
        reason = self.editor.incompatibility(self.inversion)
        if reason is not None:
            raise ValueError(
                f"editor '{self.editor.name}' cannot use inversion '{self.inversion.name}': {reason}; "
                f"compatible inversions: {', '.join(compatible_inversions(self.editor))}"
            )
        self.name = f"{self.editor.name}+{self.inversion.name}"
        self._taxonomy = Taxonomy(
            learning_strategy=self.inversion.learning_strategy,
            conditions=(Condition.PROMPT_PAIR,),
            tasks=tuple(TaskType),
            paper=f"{self.editor.paper}; inversion: {self.inversion.paper}",
        )
        self.guidance_scale = guidance_scale
        self.num_inference_steps = num_inference_steps
        self.use_cache = cache
        self.cache = InversionCache()

    def setup(self, backbone, cache_dir=None) -> None:
        super().setup(backbone, cache_dir)
        preset = getattr(backbone, "preset", None)
        self.preset_record["inversion"] = apply_preset(self.inversion, self.inversion.presets, preset)
        self.preset_record["editor"] = apply_preset(self.editor, self.editor.presets, preset)
        root = Path(cache_dir) / "inversions" if (cache_dir is not None and self.use_cache) else None
        self.cache = InversionCache(root, memory_items=16 if self.use_cache else 0)
        self._fingerprint = backbone_fingerprint(backbone) if self.use_cache else None
        self._empty = encode_prompt(backbone, [""])

    # --- inversion (cached), then editing ---------------------------------------------------------------
    def _scales(self) -> tuple[int, float]:
        bb = self.backbone
        steps = self.num_inference_steps or bb.num_inference_steps
        guidance = self.guidance_scale if self.guidance_scale is not None else bb.guidance_scale
        return steps, float(guidance)

    def cache_fields(self, sample: Sample, steps: int, guidance: float, seed: int | None) -> dict[str, Any]:
        """Everything the inversion of ``sample`` depends on (the cache key's inputs)."""
        bb = self.backbone
        return {
            "image": image_digest(sample.source_image, bb.resolution),
            "source_prompt": sample.source_prompt if self.editor.inversion_prompt == "source" else "",
            "backbone": self._fingerprint,
            "scheduler": dict(ddim_scheduler(bb).config),
            "steps": steps,
            "guidance": self.inversion.inversion_guidance(guidance),
            "dtype": str(bb.dtype),
            "inversion": self.inversion.name,
            "settings": self.inversion.settings(),
            "seed": seed if self.inversion.stochastic else None,
        }

    def invert(self, sample: Sample, source_embeds: torch.Tensor, generator: torch.Generator | None = None
               ) -> tuple[InversionResult, bool]:
        """The inversion of ``sample``'s source (from the cache when present); returns (result, was_cached)."""
        bb = self.backbone
        steps, guidance = self._scales()
        seed = generator.initial_seed() if generator is not None else 0
        key = fields = None
        if self.use_cache:
            fields = self.cache_fields(sample, steps, guidance, seed)
            key = self.cache.key(fields)
            cached = self.cache.get(key, bb.device)
            if cached is not None:
                return cached, True
        latents = encode_image(bb, sample.source_image)
        prompt_embeds = source_embeds if self.editor.inversion_prompt == "source" else self._empty
        result = self.inversion.invert(bb, latents, prompt_embeds, self._empty, steps, guidance,
                                       torch.Generator().manual_seed(seed))
        if key is not None:
            self.cache.put(key, result, fields)
        return result, False

    def request(self, sample: Sample, generator: torch.Generator | None = None) -> tuple[EditRequest, dict]:
        """Encode the prompts and invert the source: everything an editor needs."""
        bb = self.backbone
        _, guidance = self._scales()
        source_embeds = encode_prompt(bb, [sample.source_prompt])
        target_embeds = encode_prompt(bb, [sample.target_prompt])
        start = time.perf_counter()
        result, cached = self.invert(sample, source_embeds, generator)
        info = {"inversion": self.inversion.name, "editor": self.editor.name, "inversion_cached": cached,
                "inversion_s": time.perf_counter() - start, "inversion_info": result.info}
        req = EditRequest(backbone=bb, inversion=self.inversion, result=result, sample=sample,
                          source_embeds=source_embeds, target_embeds=target_embeds, empty_embeds=self._empty,
                          guidance_scale=guidance)
        return req, info

    def reconstruct(self, sample: Sample, generator: torch.Generator | None = None) -> Any:
        """The inversion's reconstruction of the source (source prompt, editing scale), as a PIL image."""
        req, _ = self.request(sample, generator)
        return decode_latents(self.backbone, reconstruct(req).to(self.backbone.dtype))

    def edit(self, sample: Sample, generator: torch.Generator) -> EditOutput:
        # 1. Encode the prompts; invert the source image, or reuse its cached inversion
        req, info = self.request(sample, generator)
        # 2. The editor runs the shared denoising loop from the inversion's result
        start = time.perf_counter()
        latents = self.editor.edit(req)
        info["edit_s"] = time.perf_counter() - start
        # 3. Decode the target branch
        image = decode_latents(self.backbone, latents.to(self.backbone.dtype))
        return EditOutput(image=image, info=info)
