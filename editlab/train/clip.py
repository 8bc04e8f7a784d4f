"""Train the small ShapesWorld CLIP model (transformers ``CLIPModel``) contrastively on rendered scenes.

Each batch is generated on the fly from the procedural world: half the images are fresh scenes and the
other half are *twins* that differ from one of them in exactly one captioned attribute (an object's colour,
shape, texture, ..., the background, the style, or one object removed), rendered too. On top of the
in-batch captions every image is also contrasted against extra perturbed captions of its own scene (text
only). The loss is the symmetric InfoNCE of CLIP with a learnable logit scale; captions that happen to be
identical inside a batch count as positives for each other. An auxiliary loss reads every attribute (per
grid cell) out of both towers' embeddings with linear probes, which makes the towers encode where each
attribute is instead of a bag of colours; the probes are dropped at export.

Which attributes exist is discovered from the world itself (fields of its scene/object records whose change
alters the caption), so the trainer and the zero-shot evaluation follow the world without a hand-kept list.

Usage::

    python -m editlab.train.clip --out runs/clip --minutes 60 --threads 1 --device auto \
        --export weights/shapesworld/clip
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import importlib
import json
import math
import shutil
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

from editlab.models.tokenizer import build_clip_tokenizer, learn_word_merges  # noqa: F401
from editlab.train.common import (
    EMA,
    LOG_CSV,
    Budget,
    CSVLog,
    autocast,
    base_parser,
    count_params,
    load_checkpoint,
    pick_device,
    save_checkpoint,
    set_threads,
)

WORLD_MODULE = "editlab.datasets.shapesworld.world"
CHECKPOINT = "checkpoint.pt"
EVAL_SEED = 987_654_321  # held-out scenes come from a generator no training run uses
MAX_CATEGORIES = 64  # a field with more distinct values than this is treated as continuous
LOG_FIELDS = [
    "step", "wall_s", "loss", "loss_i2t", "loss_t2i", "acc_i2t", "lr", "logit_scale", "img_per_s",
    "eval_attr_mean", "eval_retrieval_i2t", "eval_retrieval_t2i", "loss_aux", "aux_acc_img", "aux_acc_txt",
]  # fmt: skip


# --------------------------------------------------------------------------------------------------------
# Scene records and their attributes


def load_world(name: str = WORLD_MODULE) -> ModuleType:
    """Import the world module (``sample_scene``, ``render``, ``caption``, ``vocabulary``)."""
    return importlib.import_module(name)


def record_fields(rec: Any) -> dict[str, Any]:
    """Field name -> value of a dataclass / namedtuple / plain-object record."""
    if dataclasses.is_dataclass(rec):
        return {f.name: getattr(rec, f.name) for f in dataclasses.fields(rec)}
    if hasattr(rec, "_asdict"):
        return dict(rec._asdict())
    return dict(vars(rec))


def record_replace(rec: Any, **changes: Any) -> Any:
    """A copy of ``rec`` with ``changes`` applied (dataclass or namedtuple)."""
    if dataclasses.is_dataclass(rec):
        return dataclasses.replace(rec, **changes)
    if hasattr(rec, "_replace"):
        return rec._replace(**changes)
    new = type(rec).__new__(type(rec))
    new.__dict__.update({**vars(rec), **changes})
    return new


def _is_numeric(values: Sequence[Any]) -> bool:
    vals = [v for v in values if v is not None]
    if not vals:
        return False
    if any(isinstance(v, float) for v in vals):
        return True
    return all(isinstance(v, int) and not isinstance(v, bool) for v in vals) and len(set(vals)) > MAX_CATEGORIES


def _hashable(v: Any) -> bool:
    try:
        hash(v)
    except TypeError:
        return False
    return True


@dataclass
class AttributeSpace:
    """The editable attributes of the world's scenes, learnt by sampling.

    ``obj_values`` / ``scene_values`` hold, per field, the observed categories (or, for continuous fields,
    a fixed pool of observed values). ``compat`` records which values each object field takes together with
    each shape, so edits stay inside what the world generates (an expression only on shapes that have one).
    ``obj_attrs`` / ``scene_attrs`` list the fields whose change alters the caption.
    """

    obj_values: dict[str, list[Any]]
    scene_values: dict[str, list[Any]]
    compat: dict[tuple[Any, str], list[Any]] = field(default_factory=dict)
    obj_attrs: list[str] = field(default_factory=list)
    scene_attrs: list[str] = field(default_factory=list)
    max_objects: int = 0

    @classmethod
    def discover(cls, world: ModuleType, rng: np.random.Generator, n_scenes: int = 1500) -> AttributeSpace:
        """Sample ``n_scenes`` scenes, collect field values, then keep the fields the caption depends on."""
        scenes = [world.sample_scene(rng) for _ in range(n_scenes)]
        obj_seen: dict[str, list[Any]] = {}
        scene_seen: dict[str, list[Any]] = {}
        compat: dict[tuple[Any, str], set[Any]] = {}
        for s in scenes:
            for k, v in record_fields(s).items():
                if k != "objects" and _hashable(v):
                    scene_seen.setdefault(k, []).append(v)
            for o in s.objects:
                f = record_fields(o)
                for k, v in f.items():
                    if _hashable(v):
                        obj_seen.setdefault(k, []).append(v)
                        compat.setdefault((f.get("shape"), k), set()).add(v)
        space = cls(
            obj_values={k: _value_pool(v) for k, v in obj_seen.items()},
            scene_values={k: _value_pool(v) for k, v in scene_seen.items()},
            compat={k: _sorted(v) for k, v in compat.items()},
            max_objects=max(len(s.objects) for s in scenes),
        )
        probe = scenes[: min(80, len(scenes))]
        space.obj_attrs = [k for k in space.obj_values if space._changes_caption(world, probe, ("object", k), rng)]
        space.scene_attrs = [k for k in space.scene_values if space._changes_caption(world, probe, ("scene", k), rng)]
        return space

    def is_numeric(self, kind: str, name: str) -> bool:
        pool = (self.obj_values if kind == "object" else self.scene_values)[name]
        return _is_numeric(pool)

    def _changes_caption(self, world: ModuleType, scenes: list[Any], target: tuple[str, str], rng: Any) -> bool:
        kind, name = target
        for s in scenes:
            for idx in range(len(s.objects)) if kind == "object" else [None]:
                if self.variants(world, s, kind, name, idx, rng=rng, limit=1):
                    return True
        return False

    def _object_candidates(self, obj: Any, name: str, rng: np.random.Generator | None) -> list[Any]:
        """Edited copies of ``obj`` with field ``name`` set to each other allowed value."""
        f = record_fields(obj)
        cur = f[name]
        shape = f.get("shape")
        out = []
        if name == "shape":
            for s in self.obj_values[name]:
                if s == cur:
                    continue
                changes: dict[str, Any] = {"shape": s}
                for k, v in f.items():  # keep the other categories if that shape has them, else pick one it has
                    allowed = self.compat.get((s, k))
                    if k == "shape" or allowed is None or self.is_numeric("object", k) or v in allowed:
                        continue
                    changes[k] = allowed[int(rng.integers(len(allowed)))] if rng is not None else allowed[0]
                out.append(record_replace(obj, **changes))
            return out
        allowed = self.obj_values[name]
        if not self.is_numeric("object", name) and (shape, name) in self.compat:
            allowed = self.compat[(shape, name)]
        return [record_replace(obj, **{name: v}) for v in allowed if v != cur]

    def variants(
        self,
        world: ModuleType,
        scene: Any,
        kind: str,
        name: str,
        index: int | None = None,
        rng: np.random.Generator | None = None,
        limit: int | None = None,
    ) -> list[Any]:
        """Scenes differing from ``scene`` only in one attribute, each with a distinct caption unlike the original.

        ``kind`` is ``"object"`` (field ``name`` of object ``index``) or ``"scene"``. With ``rng`` the candidates
        are tried in random order; ``limit`` stops after that many.
        """
        seen = {world.caption(scene)}
        if kind == "object":
            assert index is not None
            objs = list(scene.objects)
            fits = getattr(world, "fits", None)  # keep edits placeable (no overlaps) when the world can tell
            cands = [
                record_replace(scene, objects=tuple(objs[:index] + [o] + objs[index + 1 :]))
                for o in self._object_candidates(objs[index], name, rng)
                if fits is None or fits(scene.objects, o, index)
            ]
        else:
            cur = getattr(scene, name)
            cands = [record_replace(scene, **{name: v}) for v in self.scene_values[name] if v != cur]
        if rng is not None:
            cands = [cands[i] for i in rng.permutation(len(cands))]
        out = []
        for c in cands:
            cap = world.caption(c)
            if cap not in seen:
                seen.add(cap)
                out.append(c)
                if limit is not None and len(out) >= limit:
                    break
        return out

    def applicable(self, obj: Any) -> list[str]:
        """Captioned object attributes that can take another value on ``obj`` (e.g. expression only on faces)."""
        shape = getattr(obj, "shape", None)
        out = []
        for name in self.obj_attrs:
            allowed = self.compat.get((shape, name))
            if name == "shape" or allowed is None or self.is_numeric("object", name) or len(allowed) > 1:
                out.append(name)
        return out

    def perturb(self, world: ModuleType, scene: Any, rng: np.random.Generator, tries: int = 12) -> Any | None:
        """One random single-attribute edit of ``scene`` (or an object removed); ``None`` if none was found.

        An object is picked first and the attribute among those that apply to it, so shape-specific
        attributes (a triangle's direction, a face's expression) are drawn as often as the generic ones.
        """
        for _ in range(tries):
            index = int(rng.integers(len(scene.objects))) if scene.objects else None
            obj_kinds = [("object", k) for k in self.applicable(scene.objects[index])] if index is not None else []
            kinds = obj_kinds + [("scene", k) for k in self.scene_attrs] + [("remove", "")]
            kind, name = kinds[int(rng.integers(len(kinds)))]
            if kind == "remove":
                if len(scene.objects) < 2:
                    continue
                new = record_replace(scene, objects=tuple(o for i, o in enumerate(scene.objects) if i != index))
                if world.caption(new) != world.caption(scene):
                    return new
                continue
            found = self.variants(world, scene, kind, name, index if kind == "object" else None, rng=rng, limit=1)
            if found:
                return found[0]
        return None


def _sorted(values: Any) -> list[Any]:
    try:
        return sorted(values)
    except TypeError:
        return sorted(values, key=repr)


def _value_pool(values: list[Any], n_numeric: int = 24) -> list[Any]:
    """Distinct categories, or ``n_numeric`` quantiles of a continuous field."""
    if _is_numeric(values):
        vals = np.asarray([v for v in values if v is not None], dtype=float)
        qs = np.quantile(vals, np.linspace(0.02, 0.98, n_numeric))
        cast = int if all(isinstance(v, int) for v in values if v is not None) else float
        return _sorted({cast(round(q, 4)) if cast is float else cast(round(q)) for q in qs})
    return _sorted(set(values))


# --------------------------------------------------------------------------------------------------------
# Tokenizer


def build_word_tokenizer(words: Sequence[str], out_dir: str | Path) -> CLIPTokenizer:
    """A stock ``CLIPTokenizer`` in which each of ``words`` is one token (see :mod:`editlab.models.tokenizer`)."""
    return build_clip_tokenizer(words, out_dir)


# --------------------------------------------------------------------------------------------------------
# Data


def make_batch(
    world: ModuleType,
    space: AttributeSpace,
    rng: np.random.Generator,
    batch_size: int,
    twin_frac: float = 0.5,
    text_negatives: int = 1,
    size: int = 64,
) -> tuple[np.ndarray, list[str], list[str], dict[str, Any]]:
    """Rendered images, their captions, extra perturbed captions (hard text negatives), and caption -> scene."""
    n_twins = min(int(round(batch_size * twin_frac)), batch_size // 2)
    base = [world.sample_scene(rng) for _ in range(batch_size - n_twins)]
    scenes = list(base)
    for i in range(n_twins):
        twin = space.perturb(world, base[i], rng)
        scenes.append(twin if twin is not None else world.sample_scene(rng))
    images = np.stack([np.asarray(world.render(s, size), dtype=np.uint8) for s in scenes])
    captions = [world.caption(s) for s in scenes]
    scene_of = dict(zip(captions, scenes, strict=True))
    extra = []
    for s in scenes:
        for _ in range(text_negatives):
            p = space.perturb(world, s, rng)
            if p is not None:
                cap = world.caption(p)
                extra.append(cap)
                scene_of.setdefault(cap, p)
    return images, captions, extra, scene_of


def image_stats(world: ModuleType, rng: np.random.Generator, n: int = 256, size: int = 64) -> tuple[list, list]:
    """Per-channel mean and std (in [0, 1]) of ``n`` renders."""
    x = np.stack([np.asarray(world.render(world.sample_scene(rng), size)) for _ in range(n)]).astype(np.float64)
    x = x.reshape(-1, 3) / 255.0
    return [round(float(v), 4) for v in x.mean(0)], [round(float(v), 4) for v in x.std(0)]


def to_pixels(images: np.ndarray, mean: Sequence[float], std: Sequence[float], device: torch.device) -> torch.Tensor:
    """uint8 (B,H,W,3) -> normalized float (B,3,H,W), as ``CLIPImageProcessor`` does for 64x64 input."""
    x = torch.from_numpy(np.ascontiguousarray(images)).to(device).permute(0, 3, 1, 2).float() / 255.0
    m = torch.tensor(mean, device=device).view(1, 3, 1, 1)
    s = torch.tensor(std, device=device).view(1, 3, 1, 1)
    return (x - m) / s


def augment(x: torch.Tensor, p: float = 0.3) -> torch.Tensor:
    """Mild blur and noise on [0,1] images so scores stay stable on decoded (slightly soft) generations."""
    if p <= 0:
        return x
    b = x.shape[0]
    k = torch.tensor([1.0, 2.0, 1.0], device=x.device)
    k2 = (k[:, None] * k[None, :]) / 16.0
    blurred = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), k2.expand(3, 1, 3, 3), groups=3)
    use_blur = (torch.rand(b, 1, 1, 1, device=x.device) < p).float()
    x = use_blur * blurred + (1 - use_blur) * x
    sigma = (torch.rand(b, 1, 1, 1, device=x.device) < p).float() * torch.rand(b, 1, 1, 1, device=x.device) * 0.04
    return (x + sigma * torch.randn_like(x)).clamp(0, 1)


# --------------------------------------------------------------------------------------------------------
# Model


def build_model(
    tok: CLIPTokenizer,
    image_size: int = 64,
    patch: int = 8,
    vision_width: int = 160,
    vision_layers: int = 4,
    text_width: int = 128,
    text_layers: int = 3,
    heads: int = 4,
    proj: int = 128,
) -> CLIPModel:
    """A small ``CLIPModel`` for ``image_size`` inputs whose text tower fits ``tok``."""
    config = CLIPConfig(
        text_config=dict(
            vocab_size=len(tok),
            hidden_size=text_width,
            intermediate_size=4 * text_width,
            num_hidden_layers=text_layers,
            num_attention_heads=heads,
            max_position_embeddings=77,
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
            hidden_act="gelu",
            projection_dim=proj,
        ),
        vision_config=dict(
            image_size=image_size,
            patch_size=patch,
            hidden_size=vision_width,
            intermediate_size=4 * vision_width,
            num_hidden_layers=vision_layers,
            num_attention_heads=heads,
            hidden_act="gelu",
            projection_dim=proj,
        ),
        projection_dim=proj,
    )
    return CLIPModel(config)


def encode_images(model: CLIPModel, pixels: torch.Tensor, normalize: bool = True) -> torch.Tensor:
    """Projected image embeddings (unit-norm unless ``normalize`` is False)."""
    emb = model.visual_projection(model.vision_model(pixel_values=pixels).pooler_output)
    return F.normalize(emb, dim=-1) if normalize else emb


def encode_texts(
    model: CLIPModel, tok: CLIPTokenizer, captions: list[str], device: torch.device, normalize: bool = True
) -> torch.Tensor:
    """Projected text embeddings (unit-norm unless ``normalize`` is False)."""
    enc = tok(captions, padding=True, truncation=True, max_length=77, return_tensors="pt").to(device)
    pooled = model.text_model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).pooler_output
    emb = model.text_projection(pooled)
    return F.normalize(emb, dim=-1) if normalize else emb


class AttributeProbe(nn.Module):
    """Linear read-out of every scene attribute from an embedding, for an auxiliary training loss.

    Objects are addressed by slot: their grid cell when the world places objects on a categorical
    ``x``/``y`` grid, else their index. Per slot the probe predicts presence and each categorical object
    attribute; it also predicts the categorical scene attributes. Training only: never exported.
    """

    def __init__(self, space: AttributeSpace, dim: int) -> None:
        super().__init__()
        ov = space.obj_values
        grid = all(k in ov and not space.is_numeric("object", k) for k in ("x", "y"))
        self.slot_fields: tuple[str, ...] = ("x", "y") if grid else ()
        self.slots: list[Any] = (
            [(x, y) for x in ov["x"] for y in ov["y"]] if grid else list(range(max(1, space.max_objects)))
        )
        self.obj_heads = [k for k in space.obj_attrs if k not in self.slot_fields and not space.is_numeric("object", k)]
        self.scene_heads = [k for k in space.scene_attrs if not space.is_numeric("scene", k)]
        self.obj_index = {k: {v: i for i, v in enumerate(ov[k])} for k in self.obj_heads}
        self.scene_index = {k: {v: i for i, v in enumerate(space.scene_values[k])} for k in self.scene_heads}
        sizes: list[int] = []
        for _ in self.slots:
            sizes += [2] + [len(self.obj_index[k]) for k in self.obj_heads]
        sizes += [len(self.scene_index[k]) for k in self.scene_heads]
        self.n_heads, self.n_cls = len(sizes), max(sizes)
        valid = torch.zeros(self.n_heads, self.n_cls, dtype=torch.bool)
        for h, n in enumerate(sizes):
            valid[h, :n] = True
        self.register_buffer("valid", valid, persistent=False)
        self.head = nn.Linear(dim, self.n_heads * self.n_cls)

    def targets(self, scenes: Sequence[Any]) -> torch.Tensor:
        """(B, heads) class indices; -100 where an attribute does not apply (empty slot)."""
        out = np.full((len(scenes), self.n_heads), -100, dtype=np.int64)
        per_slot = 1 + len(self.obj_heads)
        for b, scene in enumerate(scenes):
            occupied: dict[Any, Any] = {}
            for i, o in enumerate(scene.objects):
                key = tuple(getattr(o, f) for f in self.slot_fields) if self.slot_fields else i
                occupied.setdefault(key, o)
            for si, key in enumerate(self.slots):
                base = si * per_slot
                obj = occupied.get(key)
                out[b, base] = int(obj is not None)
                if obj is not None:
                    for j, k in enumerate(self.obj_heads):
                        out[b, base + 1 + j] = self.obj_index[k].get(getattr(obj, k), -100)
            base = len(self.slots) * per_slot
            for j, k in enumerate(self.scene_heads):
                out[b, base + j] = self.scene_index[k].get(getattr(scene, k), -100)
        return torch.from_numpy(out)

    def loss(self, emb: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean cross-entropy over applicable heads, and their accuracy."""
        logits = self.head(emb).view(-1, self.n_heads, self.n_cls).masked_fill(~self.valid, -1e4)
        targets = targets.to(emb.device)
        loss = F.cross_entropy(logits.reshape(-1, self.n_cls), targets.reshape(-1), ignore_index=-100)
        mask = targets != -100
        acc = (logits.argmax(-1) == targets)[mask].float().mean()
        return loss, acc


def contrastive_loss(
    img: torch.Tensor, txt: torch.Tensor, targets: torch.Tensor, scale: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Symmetric InfoNCE. ``txt`` holds unique captions; ``targets[i]`` is image ``i``'s caption row.

    Images -> texts: cross-entropy over all captions (including the extra hard negatives). Texts -> images:
    for each caption used in the batch, a uniform target over every image carrying it.
    Returns (loss, loss_i2t, loss_t2i, i2t top-1 accuracy).
    """
    logits = scale * img @ txt.t()  # (B, U)
    loss_i2t = F.cross_entropy(logits, targets)
    rows = torch.unique(targets)
    pos = (targets[None, :] == rows[:, None]).float()  # (R, B)
    log_p = F.log_softmax(logits.t()[rows], dim=1)
    loss_t2i = -((pos / pos.sum(1, keepdim=True)) * log_p).sum(1).mean()
    acc = (logits.argmax(1) == targets).float().mean()
    return 0.5 * (loss_i2t + loss_t2i), loss_i2t, loss_t2i, acc


# --------------------------------------------------------------------------------------------------------
# Evaluation


@torch.no_grad()
def evaluate(
    model: CLIPModel,
    tok: CLIPTokenizer,
    world: ModuleType,
    space: AttributeSpace,
    mean: Sequence[float],
    std: Sequence[float],
    device: torch.device,
    n_scenes: int = 512,
    seed: int = EVAL_SEED,
    batch: int = 64,
    size: int = 64,
) -> dict[str, Any]:
    """Zero-shot attribute accuracy and batch-of-``batch`` retrieval top-1 on held-out renders.

    For every attribute, each held-out image (and, for object attributes, each of its objects) is classified
    among its true caption and every caption that differs from it only in that attribute.
    """
    was_training = model.training
    model.eval()
    rng = np.random.default_rng(seed)
    n_scenes = max(batch, (n_scenes // batch) * batch)
    scenes = [world.sample_scene(rng) for _ in range(n_scenes)]
    caps = [world.caption(s) for s in scenes]
    img_emb = torch.cat(
        [
            encode_images(
                model, to_pixels(np.stack([world.render(s, size) for s in scenes[i : i + batch]]), mean, std, device)
            )
            for i in range(0, n_scenes, batch)
        ]
    )
    cache: dict[str, torch.Tensor] = {}

    def text(cs: list[str]) -> torch.Tensor:
        todo = [c for c in dict.fromkeys(cs) if c not in cache]
        for i in range(0, len(todo), 256):
            chunk = todo[i : i + 256]
            for c, e in zip(chunk, encode_texts(model, tok, chunk, device), strict=True):
                cache[c] = e
        return torch.stack([cache[c] for c in cs])

    i2t = t2i = 0
    for i in range(0, n_scenes, batch):
        c = caps[i : i + batch]
        sim = img_emb[i : i + batch] @ text(c).t()
        i2t += sum(c[j] == c[k] for j, k in enumerate(sim.argmax(1).tolist()))
        t2i += sum(c[j] == c[k] for j, k in enumerate(sim.argmax(0).tolist()))
    result: dict[str, Any] = {
        "n_images": n_scenes,
        "retrieval_batch": batch,
        "retrieval_i2t_top1": i2t / n_scenes,
        "retrieval_t2i_top1": t2i / n_scenes,
        "attributes": {},
    }
    targets = [("object", k) for k in space.obj_attrs] + [("scene", k) for k in space.scene_attrs]
    for kind, name in targets:
        correct = total = 0
        n_cands, chance = 0, 0.0
        for s, cap, emb in zip(scenes, caps, img_emb, strict=True):
            for idx in range(len(s.objects)) if kind == "object" else [None]:
                alts = [world.caption(v) for v in space.variants(world, s, kind, name, idx)]
                if not alts:
                    continue
                scores = text([cap, *alts]) @ emb
                correct += int(scores.argmax().item() == 0)
                total += 1
                n_cands += 1 + len(alts)
                chance += 1.0 / (1 + len(alts))
        if total:
            result["attributes"][name] = {
                "accuracy": correct / total,
                "n": total,
                "mean_candidates": n_cands / total,
                "chance": chance / total,
            }
    accs = [v["accuracy"] for v in result["attributes"].values()]
    result["attribute_mean"] = float(np.mean(accs)) if accs else float("nan")
    model.train(was_training)
    return result


# --------------------------------------------------------------------------------------------------------
# Export


def export_model(
    model: CLIPModel,
    tok: CLIPTokenizer,
    mean: Sequence[float],
    std: Sequence[float],
    out_dir: str | Path,
    extra_files: dict[str, str | Path] | None = None,
    metadata: dict[str, Any] | None = None,
) -> Path:
    """Write model (safetensors), processor and tokenizer to ``out_dir`` atomically (temp dir + rename)."""
    out = Path(out_dir)
    tmp = out.with_name(out.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    model.save_pretrained(tmp)
    size = model.config.vision_config.image_size
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": size},
        crop_size={"height": size, "width": size},
        image_mean=list(mean),
        image_std=list(std),
    )
    CLIPProcessor(image_processor=image_processor, tokenizer=tok).save_pretrained(tmp)
    for name, src in (extra_files or {}).items():
        shutil.copyfile(src, tmp / name)
    if metadata is not None:
        (tmp / "training.json").write_text(json.dumps(metadata, indent=2, default=str) + "\n")
    if out.exists():
        old = out.with_name(out.name + ".old")
        if old.exists():
            shutil.rmtree(old)
        out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old)
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp.rename(out)
    return out


# --------------------------------------------------------------------------------------------------------
# Training


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = base_parser("Train the ShapesWorld CLIP model.", out="runs/clip", steps=2000, batch_size=64, lr=8e-4)
    p.set_defaults(ema_decay=0.995, ckpt_every=3.0)
    p.add_argument("--fresh", action="store_true", help="ignore a checkpoint in --out (by default training resumes)")
    p.add_argument("--world", default=WORLD_MODULE, help="module implementing the ShapesWorld API")
    p.add_argument("--warmup", type=int, default=150)
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--twin-frac", type=float, default=0.5, help="share of the batch that are one-edit twins")
    p.add_argument("--text-negatives", type=int, default=2, help="extra perturbed captions per image")
    p.add_argument("--augment", type=float, default=0.25, help="probability of blur / of noise per image")
    p.add_argument("--aux-weight", type=float, default=5.0, help="weight of the attribute read-out loss (0 = off)")
    p.add_argument("--patch", type=int, default=8)
    p.add_argument("--vision-width", type=int, default=160)
    p.add_argument("--vision-layers", type=int, default=4)
    p.add_argument("--text-width", type=int, default=128)
    p.add_argument("--text-layers", type=int, default=3)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--proj", type=int, default=128)
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--eval-every", type=int, default=400, help="steps between quick evaluations (0 = off)")
    p.add_argument("--eval-scenes", type=int, default=512, help="held-out scenes for the export evaluation")
    p.add_argument("--discover-scenes", type=int, default=1500)
    p.add_argument("--export-only", action="store_true", help="export the checkpoint in --out without training")
    return p.parse_args(argv)


def _upgrade_log_header(path: Path, fields: list[str]) -> None:
    """Rewrite an existing CSV log under ``fields`` (a log from an older column set keeps its rows)."""
    if not path.exists():
        return
    with path.open(newline="") as f:
        header = next(csv.reader(f), None)
    if header is None or header == fields:
        return
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    tmp.replace(path)


def lr_at(step: int, args: argparse.Namespace) -> float:
    """Linear warmup, then cosine decay to 5% of ``--lr`` at ``--steps``."""
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    t = min(1.0, (step - args.warmup) / max(1, args.steps - args.warmup))
    return args.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * t)))


def _optimizer(model: CLIPModel, args: argparse.Namespace) -> torch.optim.Optimizer:
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.98), eps=1e-6)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Train (resuming from ``--out`` when a checkpoint is there), then optionally export; returns a summary."""
    args = parse_args(argv)
    set_threads(args.threads)
    device = pick_device(args.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    world = load_world(args.world)
    size = int(getattr(world, "IMAGE_SIZE", 64))
    tok = build_word_tokenizer(world.vocabulary(), out / "tokenizer")
    space = AttributeSpace.discover(world, np.random.default_rng(args.seed + 1), args.discover_scenes)

    ckpt = None if args.fresh else load_checkpoint(out / CHECKPOINT)
    rng = np.random.default_rng(args.seed)
    torch.manual_seed(args.seed)
    if ckpt is not None:
        arch, mean, std = ckpt["arch"], ckpt["mean"], ckpt["std"]
    else:
        arch = dict(
            image_size=size, patch=args.patch, vision_width=args.vision_width, vision_layers=args.vision_layers,
            text_width=args.text_width, text_layers=args.text_layers, heads=args.heads, proj=args.proj,
        )  # fmt: skip
        mean, std = image_stats(world, np.random.default_rng(args.seed + 2), size=size)
    model = build_model(tok, **arch).to(device)
    opt = _optimizer(model, args)
    ema = EMA(model, args.ema_decay)
    step, wall = 0, 0.0
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        ema.load_state_dict(ckpt["ema"])
        step, wall = int(ckpt["step"]), float(ckpt["wall"])
        rng.bit_generator.state = ckpt["rng"]["numpy"]
        torch.set_rng_state(ckpt["rng"]["torch"])
        print(f"resumed from {out / CHECKPOINT} at step {step}", flush=True)
    dim = model.config.projection_dim
    probes = nn.ModuleDict({"image": AttributeProbe(space, dim), "text": AttributeProbe(space, dim)}).to(device)
    aux_opt = torch.optim.AdamW(probes.parameters(), lr=args.lr, weight_decay=0.0)
    if ckpt is not None and "aux" in ckpt:
        probes.load_state_dict(ckpt["aux"]["probes"])
        aux_opt.load_state_dict(ckpt["aux"]["optimizer"])
    n_params = count_params(model)
    print(
        f"device={device} params={n_params:,} object attrs={space.obj_attrs} scene attrs={space.scene_attrs}",
        flush=True,
    )

    def state() -> dict[str, Any]:
        return {
            "model": model.state_dict(), "optimizer": opt.state_dict(), "ema": ema.state_dict(), "step": step,
            "wall": wall + budget.elapsed(), "arch": arch, "mean": mean, "std": std, "args": vars(args),
            "rng": {"numpy": rng.bit_generator.state, "torch": torch.get_rng_state()},
            "aux": {"probes": probes.state_dict(), "optimizer": aux_opt.state_dict()},
        }  # fmt: skip

    stop = {"flag": False}

    def on_signal(signum: int, frame: Any) -> None:
        stop["flag"] = True

    old_handlers = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    budget = Budget(args.minutes, args.ckpt_every)
    _upgrade_log_header(out / LOG_CSV, LOG_FIELDS)
    log = CSVLog(out, LOG_FIELDS)
    start_step = step
    model.train()
    bar = tqdm(total=args.steps, initial=step, disable=args.no_progress, mininterval=5, desc="clip")
    acc_sum: dict[str, float] = {}
    t_log, n_img = time.time(), 0
    try:
        while not args.export_only and step < args.steps and not budget.exhausted() and not stop["flag"]:
            lr = lr_at(step, args)
            for g in [*opt.param_groups, *aux_opt.param_groups]:
                g["lr"] = lr
            images, captions, extra, scene_of = make_batch(
                world, space, rng, args.batch_size, args.twin_frac, args.text_negatives, size
            )
            uniq = list(dict.fromkeys(captions + extra))
            row = {c: i for i, c in enumerate(uniq)}
            targets = torch.tensor([row[c] for c in captions], device=device)
            x = torch.from_numpy(images).to(device).permute(0, 3, 1, 2).float() / 255.0
            x = augment(x, args.augment)
            m = torch.tensor(mean, device=device).view(1, 3, 1, 1)
            s = torch.tensor(std, device=device).view(1, 3, 1, 1)
            with autocast(device, args.bf16):
                img_raw = encode_images(model, (x - m) / s, normalize=False).float()
                txt_raw = encode_texts(model, tok, uniq, device, normalize=False).float()
            img, txt = F.normalize(img_raw, dim=-1), F.normalize(txt_raw, dim=-1)
            loss, l_i2t, l_t2i, acc = contrastive_loss(img, txt, targets, model.logit_scale.exp())
            total = loss
            if args.aux_weight > 0:
                l_ai, acc_ai = probes["image"].loss(img_raw, probes["image"].targets([scene_of[c] for c in captions]))
                l_at, acc_at = probes["text"].loss(txt_raw, probes["text"].targets([scene_of[c] for c in uniq]))
                l_aux = 0.5 * (l_ai + l_at)
                total = loss + args.aux_weight * l_aux
            opt.zero_grad(set_to_none=True)
            aux_opt.zero_grad(set_to_none=True)
            total.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            aux_opt.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, math.log(100.0))
            ema.update(model)
            step += 1
            n_img += len(captions)
            bar.update(1)
            stats = [("loss", loss), ("loss_i2t", l_i2t), ("loss_t2i", l_t2i), ("acc_i2t", acc)]
            if args.aux_weight > 0:
                stats += [("loss_aux", l_aux), ("aux_acc_img", acc_ai), ("aux_acc_txt", acc_at)]
            for k, v in stats:
                acc_sum[k] = acc_sum.get(k, 0.0) + float(v.detach())
            acc_sum["n"] = acc_sum.get("n", 0.0) + 1
            evaluated = {}
            if args.eval_every and step % args.eval_every == 0:
                r = evaluate(ema.shadow, tok, world, space, mean, std, device, n_scenes=128, size=size)
                evaluated = {
                    "eval_attr_mean": r["attribute_mean"],
                    "eval_retrieval_i2t": r["retrieval_i2t_top1"],
                    "eval_retrieval_t2i": r["retrieval_t2i_top1"],
                }
                bar.write(
                    f"step {step}: " + json.dumps({k: round(v["accuracy"], 3) for k, v in r["attributes"].items()})
                )
            if step % args.log_every == 0 or evaluated or step == args.steps:
                n = acc_sum.pop("n")
                dt = time.time() - t_log
                log.write(
                    step=step, wall_s=round(wall + budget.elapsed(), 1), lr=lr,
                    logit_scale=float(model.logit_scale.detach().exp()), img_per_s=n_img / max(dt, 1e-9),
                    **{k: v / n for k, v in acc_sum.items()}, **evaluated,
                )  # fmt: skip
                bar.set_postfix(loss=f"{acc_sum['loss'] / n:.3f}", acc=f"{acc_sum['acc_i2t'] / n:.2f}")
                acc_sum, t_log, n_img = {}, time.time(), 0
            if budget.checkpoint_due():
                save_checkpoint(out / CHECKPOINT, state())
    finally:
        bar.close()
        for s_, h in old_handlers.items():
            signal.signal(s_, h)
    if step > start_step:
        save_checkpoint(out / CHECKPOINT, state())
    total_wall = wall + budget.elapsed()
    summary: dict[str, Any] = {"steps": step, "wall_s": round(total_wall, 1), "params": n_params, "device": str(device)}
    if args.export:
        ema.shadow.to(device)
        result = evaluate(ema.shadow, tok, world, space, mean, std, device, n_scenes=args.eval_scenes, size=size)
        summary["eval"] = result
        meta = {
            **summary,
            "arch": arch,
            "image_mean": mean,
            "image_std": std,
            "object_attributes": space.obj_attrs,
            "scene_attributes": space.scene_attrs,
            "args": vars(args),
            "torch": torch.__version__,
        }
        extra_files = {"train_log.csv": out / LOG_CSV} if (out / LOG_CSV).exists() else {}
        export_model(ema.shadow.to("cpu"), tok, mean, std, args.export, extra_files, meta)
        print(json.dumps({k: v for k, v in summary.items() if k != "eval"}), flush=True)
        print(json.dumps(result, indent=1), flush=True)
    return summary


if __name__ == "__main__":
    main()
