"""Inversion x editor: the training- and fine-tuning-free family of the survey as two independent axes.

PIE-Bench (Ju et al., 2024) compares inversions (DDIM, Null-text, Negative-prompt, Direct, ...) each paired
with editors (Prompt-to-Prompt, MasaCtrl, Plug-and-Play, Pix2Pix-Zero). :class:`InversionEditing` pairs any
inversion of :data:`editlab.registry.INVERSIONS` with any editor of :data:`editlab.registry.EDITORS` that can
use it; a pair that cannot work is rejected when the method is built, before any model is loaded. The method's
name reads ``<editor>+<inversion>`` (e.g. ``p2p+nti``) and its taxonomy follows its parts: with Null-text
inversion it is testing-time fine-tuning, otherwise training- and fine-tuning-free.

Inversions are computed once and cached (:mod:`editlab.methods.inversion.cache`): the DDIM inversion trajectory
of a source serves DDIM, Negative-prompt, Direct and Null-text inversion (its pivot) and every editor and target
prompt; inversions with results of their own (Null-text, EDICT, DDPM) store those. On backbones with a paper
preset (``preset: sd``) the parts' presets fill their settings left ``None``, and the run's step count and
guidance (this method's ``num_inference_steps`` / ``guidance_scale`` left ``None``) come from the inversion's
preset, else the editor's, else the backbone.
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
from editlab.methods.inversion.base import Inversion, InversionResult, Trajectory
from editlab.methods.inversion.cache import InversionCache, backbone_fingerprint, image_digest
from editlab.methods.inversion.ddim import TRAJECTORY_VERSION, ddim_trajectory
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

        return instantiate(spec, _convert_="all")  # plain lists and dicts, not OmegaConf nodes
    if name is None:
        raise ValueError(f"{registry.kind} config needs a '_target_' or a 'name'")
    return registry.get(name)(**spec)


def compatible_inversions(editor: Editor) -> list[str]:
    return [n for n in INVERSIONS.names() if editor.incompatibility(INVERSIONS.get(n)()) is None]


class InversionEditing(EditMethod):
    """An inversion paired with an editor; ``inversion`` and ``editor`` are registry names, config mappings
    or instances. ``guidance_scale`` and ``num_inference_steps`` left ``None`` take the parts' paper presets,
    else the backbone's; ``cache=False`` inverts every sample afresh."""

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
        # 1. The parts' paper presets, then the run's steps and guidance from them (the inversion's first)
        preset = getattr(backbone, "preset", None)
        self.preset_record["inversion"] = self.inversion.configure(preset)
        self.preset_record["editor"] = self.editor.configure(preset)
        for key, part_key in (("num_inference_steps", "num_inference_steps"), ("guidance_scale", "target_guidance")):
            if getattr(self, key) is not None:
                continue
            for part in (self.inversion, self.editor):
                value = getattr(part, part_key)
                if value is not None:
                    setattr(self, key, value)
                    self.preset_record.setdefault("run", {})[key] = {"value": value, "from": part.name}
                    break
        # 2. The cache (disk under <cache_dir>/inversions, plus memory) and what every lookup depends on
        root = Path(cache_dir) / "inversions" if (cache_dir is not None and self.use_cache) else None
        self.cache = InversionCache(root, memory_items=32 if self.use_cache else 0)
        self._fingerprint = backbone_fingerprint(backbone) if self.use_cache else None
        self._empty = encode_prompt(backbone, [""])

    def describe(self) -> dict[str, Any]:
        steps, guidance = self._scales() if self.backbone is not None else (None, None)
        return super().describe() | {"num_inference_steps": steps, "guidance_scale": guidance,
                                     "inversion": {"name": self.inversion.name, "version": self.inversion.version,
                                                   **self.inversion.settings()},
                                     "editor": {"name": self.editor.name, **self.editor.settings()}}

    # --- inversion (cached), then editing ---------------------------------------------------------------
    def _scales(self) -> tuple[int, float]:
        bb = self.backbone
        steps = self.num_inference_steps or bb.num_inference_steps
        guidance = self.guidance_scale if self.guidance_scale is not None else bb.guidance_scale
        return steps, float(guidance)

    def source_fields(self, sample: Sample, steps: int) -> dict[str, Any]:
        """What identifies the source's inversion problem: image, prompt, backbone, schedule, dtype."""
        bb = self.backbone
        return {
            "image": image_digest(sample.source_image, bb.resolution),
            "source_prompt": sample.source_prompt if self.editor.inversion_prompt == "source" else "",
            "backbone": self._fingerprint,
            "scheduler": dict(ddim_scheduler(bb).config),
            "steps": steps,
            "dtype": str(bb.dtype),
        }

    def _regularization(self) -> dict[str, Any] | None:
        reg = self.editor.inversion_regularization() if self.inversion.uses_ddim_trajectory else None
        return None if reg is None else reg.as_dict()

    def cache_fields(self, sample: Sample, steps: int, guidance: float, seed: int | None) -> dict[str, Any]:
        """Everything the inversion's own result depends on (the cache key's inputs)."""
        return self.source_fields(sample, steps) | {
            "guidance": self.inversion.inversion_guidance(guidance),
            "inversion": self.inversion.name,
            "version": self.inversion.version,
            "settings": self.inversion.settings(),
            "regularization": self._regularization(),
            "seed": seed if self.inversion.stochastic else None,
        }

    def trajectory_fields(self, sample: Sample, steps: int, guidance: float) -> dict[str, Any]:
        """Everything the shared DDIM inversion trajectory depends on."""
        return self.source_fields(sample, steps) | {
            "kind": "ddim_trajectory", "version": TRAJECTORY_VERSION, "guidance": float(guidance),
            "regularization": self._regularization(),
        }

    def _trajectory(self, sample: Sample, latents: torch.Tensor, prompt_embeds: torch.Tensor, steps: int,
                    hits: list[bool]) -> Trajectory:
        """The shared DDIM trajectory of this source, looked up in (and added to) the cache; ``hits`` records
        whether each request was served from the cache."""
        bb = self.backbone
        reg = self.editor.inversion_regularization() if self.inversion.uses_ddim_trajectory else None

        def ddim(guidance: float) -> torch.Tensor:
            fields = key = None
            if self.use_cache:
                fields = self.trajectory_fields(sample, steps, guidance)
                key = self.cache.key(fields)
                cached = self.cache.get(key, bb.device)
                if cached is not None:
                    hits.append(True)
                    return cached.latents
            hits.append(False)
            trajectory = ddim_trajectory(bb, latents, prompt_embeds, steps, guidance, self._empty, reg)
            if key is not None:
                self.cache.put(key, InversionResult(latents=trajectory, num_inference_steps=steps), fields)
            return trajectory

        return ddim

    def invert(self, sample: Sample, source_embeds: torch.Tensor, generator: torch.Generator | None = None
               ) -> tuple[InversionResult, bool]:
        """The inversion of ``sample``'s source (from the cache when present); returns (result, was_cached):
        cached means no inversion ran (the result, or for trajectory-only inversions the trajectory, was stored)."""
        bb = self.backbone
        steps, guidance = self._scales()
        seed = generator.initial_seed() if generator is not None else 0
        # 1. The inversion's own result, when it has one worth storing
        key = fields = None
        if self.use_cache and self.inversion.cache_result:
            fields = self.cache_fields(sample, steps, guidance, seed)
            key = self.cache.key(fields)
            cached = self.cache.get(key, bb.device)
            if cached is not None:
                return cached, True
        # 2. Otherwise invert, on the shared DDIM trajectory where the inversion builds on it
        latents = encode_image(bb, sample.source_image)
        prompt_embeds = source_embeds if self.editor.inversion_prompt == "source" else self._empty
        hits: list[bool] = []
        result = self.inversion.invert(bb, latents, prompt_embeds, self._empty, steps, guidance,
                                       torch.Generator().manual_seed(seed),
                                       ddim=self._trajectory(sample, latents, prompt_embeds, steps, hits))
        if hits:
            result.info["trajectory_cached"] = all(hits)
        if key is not None:
            self.cache.put(key, result, fields)
        return result, (not self.inversion.cache_result and bool(hits) and all(hits))

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
        info |= req.info
        # 3. Decode the target branch
        image = decode_latents(self.backbone, latents.to(self.backbone.dtype))
        return EditOutput(image=image, extras=dict(req.extras), info=info)
