"""The inversion cache: invert a source once, reuse it for every editor, target prompt and inversion that can.

Two kinds of entries, both keyed by a hash of everything that changes them:

* the **shared DDIM inversion trajectory** of a source: the source image (hash of its pixels at the working
  resolution), the prompt it is inverted with, the backbone (name, source and a checksum of its weights), the
  scheduler configuration, the step count, the dtype, the inversion's guidance scale, an editor's noise
  regularisation (Pix2Pix-Zero) and :data:`~editlab.methods.inversion.ddim.TRAJECTORY_VERSION`. DDIM,
  Negative-prompt and Direct inversion are this trajectory plus flags and store nothing else; Null-text
  inversion uses it as its pivot.
* an inversion's **own result** (Null-text's null embeddings, EDICT's coupled pair, DDPM's noise maps): the same
  source fields plus the inversion's name, its ``version``, its settings, the guidance it runs with and, for
  stochastic inversions (DDPM), the seed.

Every key also holds the cache format and the installed diffusers version (its schedulers and attention
kernels produce the numbers), so neither an algorithm change (bump the inversion's ``version`` or
``TRAJECTORY_VERSION``) nor a library upgrade reuses a stale inversion. On disk an entry is two files under
``<cache_dir>/inversions/``: ``<key>.safetensors`` (tensors) and ``<key>.json`` (key fields and scalars), both
written atomically, the JSON last, so a crashed write is never read back. A small in-memory LRU serves repeated
lookups within a run; with no folder the cache is in memory only.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from pathlib import Path
from typing import Any

import diffusers
import torch
from PIL import Image
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from editlab.files import atomic_write_bytes, atomic_write_json, read_json, stable_hash
from editlab.methods.inversion.base import InversionResult
from editlab.models.backbone import Backbone

CACHE_FORMAT = 2


def library_versions() -> dict[str, str]:
    """Versions of the libraries whose code computes an inversion (part of every key)."""
    return {"diffusers": diffusers.__version__}


def image_digest(image: Image.Image, resolution: int) -> str:
    """sha256 of the RGB pixels at the working resolution (what the inversion actually sees)."""
    rgb = image.convert("RGB")
    if rgb.size != (resolution, resolution):
        rgb = rgb.resize((resolution, resolution), Image.BICUBIC)
    h = hashlib.sha256(f"{rgb.size}".encode())
    h.update(rgb.tobytes())
    return h.hexdigest()[:32]


@torch.no_grad()
def weights_checksum(*modules: torch.nn.Module, samples: int = 64) -> list[float]:
    """A cheap fingerprint of model weights: per module, the sum of a strided sample of every parameter."""
    out = []
    for module in modules:
        total = 0.0
        for p in module.parameters():
            flat = p.detach().reshape(-1)
            total += float(flat[:: max(1, flat.numel() // samples)].double().sum())
        out.append(round(total, 6))
    return out


def backbone_fingerprint(backbone: Backbone) -> str:
    return stable_hash(
        {
            "name": backbone.name,
            "source": backbone.source,
            "resolution": backbone.resolution,
            "weights": weights_checksum(backbone.unet, backbone.text_encoder, backbone.vae),
        },
        length=16,
    )


class InversionCache:
    """Disk (optional) plus in-memory store of :class:`InversionResult` keyed by :meth:`key`."""

    def __init__(self, root: str | Path | None = None, memory_items: int = 16) -> None:
        self.root = Path(root) if root is not None else None
        self.memory_items = memory_items
        self._memory: OrderedDict[str, InversionResult] = OrderedDict()
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(fields: dict[str, Any]) -> str:
        return stable_hash({"format": CACHE_FORMAT, "libraries": library_versions(), **fields}, length=24)

    def _paths(self, key: str) -> tuple[Path, Path]:
        assert self.root is not None
        return self.root / f"{key}.safetensors", self.root / f"{key}.json"

    def get(self, key: str, device: torch.device) -> InversionResult | None:
        """The stored result (on ``device``), or None; unreadable files count as a miss."""
        if key in self._memory:
            self._memory.move_to_end(key)
            self.hits += 1
            return self._memory[key]
        result = self._read(key, device) if self.root is not None else None
        if result is None:
            self.misses += 1
            return None
        self._remember(key, result)
        self.hits += 1
        return result

    def _read(self, key: str, device: torch.device) -> InversionResult | None:
        tensors_path, meta_path = self._paths(key)
        meta = read_json(meta_path)
        if meta is None or meta.get("format") != CACHE_FORMAT or not tensors_path.exists():
            return None
        try:
            tensors = load_tensors(tensors_path.read_bytes())
        except Exception:  # a truncated or foreign file: recompute
            return None
        return InversionResult.from_parts(tensors, meta["scalars"]).to(device)

    def put(self, key: str, result: InversionResult, fields: dict[str, Any]) -> None:
        """Store ``result``; ``fields`` (the key's inputs) go into the JSON for inspection."""
        self._remember(key, result)
        if self.root is None:
            return
        tensors_path, meta_path = self._paths(key)
        cpu = {k: v.detach().to("cpu").contiguous() for k, v in result.tensors().items()}
        atomic_write_bytes(tensors_path, save_tensors(cpu))
        meta = {"format": CACHE_FORMAT, "key": key, "libraries": library_versions(), "fields": fields,
                "scalars": result.scalars()}
        atomic_write_json(meta_path, json.loads(json.dumps(meta, default=str)))

    def _remember(self, key: str, result: InversionResult) -> None:
        self._memory[key] = result
        self._memory.move_to_end(key)
        while len(self._memory) > self.memory_items:
            self._memory.popitem(last=False)

    def clear_memory(self) -> None:
        self._memory.clear()
