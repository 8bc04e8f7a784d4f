"""Editing samples with exact ground truth for every task type of the survey.

Each task edits one attribute of one object (or the background / the rendering style) of a random
source scene; the target image is the render of the edited scene, so every pixel outside the edited
object's footprints (before and after) is identical between source and target.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from editlab.datasets.shapesworld.world import (
    BACKGROUNDS,
    COLORS,
    DIRECTIONS,
    EXPRESSIONS,
    IMAGE_SIZE,
    POSITIONS,
    ROTATIONS,
    SHAPES,
    TEXTURED_SHAPES,
    TEXTURES,
    VIEWS,
    Obj,
    Scene,
    caption,
    fits,
    free_cells,
    object_mask,
    object_phrase,
    random_object,
    render,
    sample_scene,
)
from editlab.types import TaskType

ATTRIBUTES: dict[TaskType, str] = {
    TaskType.OBJECT_ADDITION: "presence",
    TaskType.OBJECT_REMOVAL: "presence",
    TaskType.OBJECT_REPLACEMENT: "shape",
    TaskType.BACKGROUND_CHANGE: "background",
    TaskType.EMOTION_EXPRESSION: "expression",
    TaskType.COLOR_CHANGE: "color",
    TaskType.TEXTURE_CHANGE: "texture",
    TaskType.STYLE_CHANGE: "style",
    TaskType.OBJECT_MOVEMENT: "position",
    TaskType.SIZE_CHANGE: "size",
    TaskType.POSE_ACTION: "rotation",
    TaskType.VIEWPOINT: "view",
}


@dataclass
class WorldEdit:
    """One edit: source and target scenes, their renders, the exact changed region and the texts."""

    task_type: TaskType
    source: Scene
    target: Scene
    source_image: np.ndarray
    target_image: np.ndarray
    mask: np.ndarray
    source_prompt: str
    target_prompt: str
    instruction: str
    edited_index: int | None
    attribute: str

    def blend_words(self) -> list[list[str]] | None:
        """The edited object's noun in each prompt, ``[[source words], [target words]]``, as PIE-Bench's
        ``blended_word`` gives it (empty for a prompt without the object: addition, removal); None for edits of
        the whole scene (background, style)."""
        if self.edited_index is None:
            return None
        src = [] if self.task_type is TaskType.OBJECT_ADDITION else self.source.objects[self.edited_index].shape
        tgt = [] if self.task_type is TaskType.OBJECT_REMOVAL else self.target.objects[self.edited_index].shape
        return [[src] if src else [], [tgt] if tgt else []]

    def meta(self) -> dict[str, Any]:
        """JSON-serialisable description used by the oracle (``edited_index`` refers to the target scene
        except for removal, where it refers to the source scene)."""
        return {
            "task_type": self.task_type.value,
            "attribute": self.attribute,
            "edited_index": self.edited_index,
            "source": self.source.to_dict(),
            "target": self.target.to_dict(),
        }


def _with(obj: Obj, **changes: Any) -> Obj:
    return Obj(**{**obj.to_dict(), **changes})


def referring(scene: Scene, index: int) -> str:
    """Shortest natural phrase naming object ``index`` unambiguously, e.g. ``"the red circle"``."""
    obj = scene.objects[index]
    for keys in (("shape",), ("color", "shape"), ("size", "shape"), ("size", "color", "shape")):
        same = [o for o in scene.objects if all(getattr(o, k) == getattr(obj, k) for k in keys)]
        if len(same) == 1:
            return "the " + " ".join(getattr(obj, k) for k in keys)
    return f"the {obj.color} {obj.shape} at {obj.position}"


def _choice(rng: np.random.Generator, items: list[Any] | tuple[Any, ...]) -> Any:
    return items[int(rng.integers(len(items)))]


def _pick(rng: np.random.Generator, scene: Scene, ok: Callable[[Obj], bool]) -> int | None:
    idx = [i for i, o in enumerate(scene.objects) if ok(o)]
    return None if not idx else _choice(rng, idx)


def _shuffled(rng: np.random.Generator, scene: Scene) -> Scene:
    order = rng.permutation(len(scene.objects))
    return Scene(tuple(scene.objects[i] for i in order), scene.background, scene.style)


_TEXTURE_PHRASE = {"striped": "give {ref} stripes", "dotted": "give {ref} dots", "solid": "make {ref} solid"}
_VIEW_PHRASE = {"front": "from the front", "side": "from the side", "top": "from above"}


def _attempt(rng: np.random.Generator, task: TaskType) -> tuple[Scene, Scene, str, int | None] | None:
    """One try at (source, target, instruction, edited index); None when the sampled scene does not fit."""
    if task is TaskType.OBJECT_ADDITION:
        src = sample_scene(rng, int(rng.integers(1, 3)))
        new = random_object(rng)
        cells = free_cells(src.objects, new)
        if not cells:
            return None
        x, y = _choice(rng, cells)
        new = _with(new, x=x, y=y)
        tgt = Scene(src.objects + (new,), src.background, src.style)
        return src, tgt, f"add {object_phrase(new)}", len(tgt.objects) - 1
    if task is TaskType.OBJECT_REMOVAL:
        src = sample_scene(rng)
        i = int(rng.integers(len(src.objects)))
        verb = _choice(rng, ("remove", "delete"))
        return src, src.replace_object(i, None), f"{verb} {referring(src, i)}", i
    if task is TaskType.BACKGROUND_CHANGE:
        src = sample_scene(rng)
        bg = _choice(rng, [b for b in BACKGROUNDS if b != src.background])
        tgt = Scene(src.objects, bg, src.style)
        text = _choice(rng, ("make the background {bg}", "change the background to {bg}")).format(bg=bg)
        return src, tgt, text, None
    if task is TaskType.STYLE_CHANGE:
        src = sample_scene(rng)
        style = "outline" if src.style == "flat" else "flat"
        tgt = Scene(src.objects, src.background, style)
        text = "draw the scene in outline style" if style == "outline" else "draw the scene in flat style"
        return src, tgt, text, None

    require = {
        TaskType.EMOTION_EXPRESSION: "face",
        TaskType.POSE_ACTION: "triangle",
        TaskType.VIEWPOINT: "cube",
        TaskType.TEXTURE_CHANGE: _choice(rng, TEXTURED_SHAPES),
    }.get(task)
    src = _shuffled(rng, sample_scene(rng, require=require))
    if task is TaskType.OBJECT_REPLACEMENT:
        i = int(rng.integers(len(src.objects)))
        old = src.objects[i]
        shapes = [s for s in SHAPES if s != old.shape and (old.texture == "solid" or s in TEXTURED_SHAPES)]
        shape = _choice(rng, shapes)
        fresh = random_object(rng, old.x, old.y, shape=shape)
        new = _with(fresh, color=old.color, size=old.size, texture=old.texture)
        if not fits(src.objects, new, ignore=i):
            return None
        ref = referring(src, i)
        text = _choice(rng, ("replace {ref} with {new}", "turn {ref} into {new}")).format(
            ref=ref, new=object_phrase(new, with_position=False)
        )
        return src, src.replace_object(i, new), text, i
    if task is TaskType.COLOR_CHANGE:
        i = int(rng.integers(len(src.objects)))
        old = src.objects[i]
        color = _choice(rng, [c for c in COLORS if c != old.color])
        ref = referring(src, i)
        text = _choice(rng, ("make {ref} {c}", "change the color of {ref} to {c}", "turn {ref} {c}"))
        return src, src.replace_object(i, _with(old, color=color)), text.format(ref=ref, c=color), i
    if task is TaskType.TEXTURE_CHANGE:
        i = _pick(rng, src, lambda o: o.shape in TEXTURED_SHAPES)
        assert i is not None
        old = src.objects[i]
        texture = _choice(rng, [t for t in TEXTURES if t != old.texture])
        ref = referring(src, i)
        text = _choice(rng, (_TEXTURE_PHRASE[texture], "make {ref} " + texture))
        return src, src.replace_object(i, _with(old, texture=texture)), text.format(ref=ref), i
    if task is TaskType.EMOTION_EXPRESSION:
        i = _pick(rng, src, lambda o: o.shape == "face")
        assert i is not None
        old = src.objects[i]
        expr = _choice(rng, [e for e in EXPRESSIONS if e != old.expression])
        return src, src.replace_object(i, _with(old, expression=expr)), f"make {referring(src, i)} {expr}", i
    if task is TaskType.OBJECT_MOVEMENT:
        i = int(rng.integers(len(src.objects)))
        old = src.objects[i]
        cells = [c for c in free_cells(src.objects, old, ignore=i) if c != (old.x, old.y)]
        if not cells:
            return None
        x, y = _choice(rng, cells)
        ref = referring(src, i)
        text = f"move {ref} to the {POSITIONS[(x, y)]}"
        return src, src.replace_object(i, _with(old, x=x, y=y)), text, i
    if task is TaskType.SIZE_CHANGE:
        i = int(rng.integers(len(src.objects)))
        old = src.objects[i]
        size = "large" if old.size == "small" else "small"
        new = _with(old, size=size)
        if not fits(src.objects, new, ignore=i):
            return None
        ref = referring(src, i)
        word = _choice(rng, ("bigger", "larger")) if size == "large" else "smaller"
        return src, src.replace_object(i, new), f"make {ref} {word}", i
    if task is TaskType.POSE_ACTION:
        i = _pick(rng, src, lambda o: o.shape == "triangle")
        assert i is not None
        old = src.objects[i]
        rots = [r for r in ROTATIONS if r != old.rotation and fits(src.objects, _with(old, rotation=r), ignore=i)]
        if not rots:
            return None
        rot = _choice(rng, rots)
        ref = referring(src, i)
        text = _choice(rng, ("rotate {ref} so it points {d}", "make {ref} point {d}")).format(
            ref=ref, d=DIRECTIONS[rot]
        )
        return src, src.replace_object(i, _with(old, rotation=rot)), text, i
    if task is TaskType.VIEWPOINT:
        i = _pick(rng, src, lambda o: o.shape == "cube")
        assert i is not None
        old = src.objects[i]
        views = [v for v in VIEWS if v != old.view and fits(src.objects, _with(old, view=v), ignore=i)]
        if not views:
            return None
        view = _choice(rng, views)
        new = _with(old, view=view)
        text = f"show {referring(src, i)} {_VIEW_PHRASE[view]}"
        return src, src.replace_object(i, new), text, i
    raise ValueError(f"unknown task type {task!r}")


def make_edit(rng: np.random.Generator, task_type: TaskType | str, size: int = IMAGE_SIZE) -> WorldEdit:
    """A random edit of ``task_type`` with rendered images, exact mask, prompts and instruction."""
    task = TaskType(task_type)
    while True:
        got = _attempt(rng, task)
        if got is not None:
            break
    src, tgt, instruction, idx = got
    src_img, tgt_img = render(src, size), render(tgt, size)
    if task in (TaskType.BACKGROUND_CHANGE, TaskType.STYLE_CHANGE):
        mask = np.ones((size, size), bool)
    elif task is TaskType.OBJECT_ADDITION:
        mask = object_mask(tgt, idx, size)
    elif task is TaskType.OBJECT_REMOVAL:
        mask = object_mask(src, idx, size)
    else:
        mask = object_mask(src, idx, size) | object_mask(tgt, idx, size)
    return WorldEdit(
        task_type=task,
        source=src,
        target=tgt,
        source_image=src_img,
        target_image=tgt_img,
        mask=mask,
        source_prompt=caption(src),
        target_prompt=caption(tgt),
        instruction=instruction,
        edited_index=idx,
        attribute=ATTRIBUTES[task],
    )


def train_edit_batch(rng: np.random.Generator, batch_size: int, size: int = IMAGE_SIZE) -> list[WorldEdit]:
    """``batch_size`` edits of uniformly random task types."""
    tasks = list(TaskType)
    return [make_edit(rng, tasks[int(rng.integers(len(tasks)))], size) for _ in range(batch_size)]


__all__ = ["ATTRIBUTES", "WorldEdit", "make_edit", "referring", "train_edit_batch"]
