"""Read a ShapesWorld image back into objects and attributes, and score edits against ground truth.

The reader snaps each pixel to the nearest colour of the world's palette (backgrounds, object colours,
their dark and light tones, inks), takes connected components of object-coloured pixels and measures
each component: colour by majority vote, size by extent, cell by centre, shape from the light tone
(cubes), enclosed ink (faces), fill ratio and convexity (the others), texture from the share and
layout of dark-tone pixels, rotation from the centroid offset, expression from the mouth's curvature,
view from the proportions of the three cube tones. It works on any image size and tolerates mild
noise and blur.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from editlab.datasets.shapesworld.world import (
    BACKGROUNDS,
    COLORS,
    GRID,
    INK_DARK,
    INK_LIGHT,
    Obj,
    Scene,
    dark_shade,
    ink_for,
    light_shade,
)

_UNIT = 64.0
_COLOR_NAMES = list(COLORS)
_BG_NAMES = list(BACKGROUNDS)


def _palette() -> tuple[np.ndarray, list[tuple[str, str]]]:
    cols: list[tuple[int, int, int]] = []
    labels: list[tuple[str, str]] = []
    for name, c in BACKGROUNDS.items():
        cols.append(c)
        labels.append(("bg", name))
    for name, c in COLORS.items():
        for role, val in (("base", c), ("dark", dark_shade(c)), ("light", light_shade(c))):
            cols.append(val)
            labels.append((role, name))
    for role, c in (("ink", INK_DARK), ("ink", INK_LIGHT)):
        if c not in cols:
            cols.append(c)
            labels.append((role, "ink"))
    return np.asarray(cols, np.float32), labels


_PAL, _LABELS = _palette()
_ROLE = np.array([r for r, _ in _LABELS])
_NAME = np.array([n for _, n in _LABELS])
_IS_OBJ = np.isin(_ROLE, ("base", "dark", "light"))
_IDX_DARK_INK = next(i for i, c in enumerate(_PAL.tolist()) if tuple(int(v) for v in c) == INK_DARK)
_IDX_LIGHT_INK = next(i for i, c in enumerate(_PAL.tolist()) if tuple(int(v) for v in c) == INK_LIGHT)


@dataclass
class Detected:
    """One object read from an image (``x``/``y`` are grid cells, ``area`` is in pixels)."""

    shape: str
    color: str
    size: str
    x: int
    y: int
    texture: str = "solid"
    rotation: int = 0
    expression: str | None = None
    view: str | None = None
    area: int = 0

    def to_obj(self) -> Obj:
        return Obj(
            self.shape, self.color, self.size, self.x, self.y, self.texture, self.rotation, self.expression, self.view
        )


@dataclass
class Reading:
    """What the oracle sees: background, rendering style and objects."""

    background: str
    style: str
    objects: list[Detected] = field(default_factory=list)

    def at(self, x: int, y: int) -> Detected | None:
        """The detected object in grid cell (x, y), if any (the largest one when several)."""
        hits = [o for o in self.objects if (o.x, o.y) == (x, y)]
        return max(hits, key=lambda o: o.area) if hits else None


def _labels(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of the nearest palette colour for every pixel, and the distance to it."""
    img = np.asarray(image, np.float32)
    d = ((img[:, :, None, :] - _PAL[None, None]) ** 2).sum(-1)
    idx = d.argmin(-1)
    return idx, np.sqrt(np.take_along_axis(d, idx[..., None], -1)[..., 0])


def _is_blurred(lab: np.ndarray, dist: np.ndarray) -> bool:
    """Whether edges are soft: most pixels along colour edges are far from every palette colour."""
    edge = ndimage.maximum_filter(lab, size=3) != ndimage.minimum_filter(lab, size=3)
    return bool(edge.any() and np.mean(dist[edge] > 30) > 0.2)


def _nearest_cell(v: float) -> int:
    return int(np.argmin([abs(v - g) for g in GRID]))


def _disk(r: int) -> np.ndarray:
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    return xx * xx + yy * yy <= r * r


def _majority_color(lab: np.ndarray, mask: np.ndarray) -> str:
    role, name = _ROLE[lab[mask]], _NAME[lab[mask]]
    pick = name[role == "base"] if np.any(role == "base") else name[np.isin(role, ("dark", "light"))]
    if pick.size == 0:
        return _COLOR_NAMES[0]
    values, counts = np.unique(pick, return_counts=True)
    return str(values[int(np.argmax(counts))])


def _clean(
    filled: np.ndarray, img: np.ndarray, lab: np.ndarray, scale: float, surrounds: list[tuple[int, int, int]]
) -> np.ndarray:
    """Drop edge pixels that are mostly (over 60 %) a surrounding colour (background, outline ink) blended
    with the object's colour: blur turns such blends into the object's tones and inflates the footprint.
    Returns the largest remaining part."""
    base = np.asarray(COLORS[_majority_color(lab, filled)], np.float32)
    k = max(1, int(round(scale)))
    band = filled & ~ndimage.binary_erosion(filled, structure=_disk(2 * k))
    px = img[band]
    blend = np.zeros(len(px), bool)
    for sur in surrounds:
        s = np.asarray(sur, np.float32)
        axis = base - s
        alpha = np.clip((px - s) @ axis / float(axis @ axis), 0, 1)
        off = np.linalg.norm(px - (s + alpha[:, None] * axis), axis=1)
        blend |= (off < 25) & (alpha < 0.4)
    drop = np.zeros_like(filled)
    drop[band] = blend
    out = ndimage.binary_fill_holes(filled & ~drop)
    lab_c, n = ndimage.label(out)
    if n > 1:
        sizes = ndimage.sum(out, lab_c, range(1, n + 1))
        out = lab_c == (int(np.argmax(sizes)) + 1)
    return out if out.any() else filled


def _measure(
    img: np.ndarray, lab: np.ndarray, filled: np.ndarray, scale: float, outlined: bool, blurred: bool
) -> Detected:
    """Attributes of one object given its hole-filled footprint ``filled`` (bool mask); ``blurred`` images
    get thin tone regions discounted (they are edge mixtures, not cube faces)."""
    ys, xs = np.nonzero(filled)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    f = filled[y0:y1, x0:x1]
    lb = lab[y0:y1, x0:x1]
    role, name = _ROLE[lb], _NAME[lb]
    obj_px = f & _IS_OBJ[lb]
    base = obj_px & (role == "base")
    if not base.any():
        base = obj_px
    votes = {c: int(np.count_nonzero(base & (name == c))) for c in _COLOR_NAMES}
    color = max(votes, key=lambda c: votes[c])
    w, h = (x1 - x0) / scale, (y1 - y0) / scale
    size = "large" if max(w, h) >= 20.5 else "small"
    cx, cy = (x0 + x1) / 2 / scale / _UNIT, (y0 + y1) / 2 / scale / _UNIT
    det = Detected("circle", color, size, _nearest_cell(cx), _nearest_cell(cy), area=int(f.sum()))

    # on blurred images, only pixels one (two when outlined: blurred ink reads as the dark tone) pixel
    # inside the edge are trusted for texture
    interior = f
    if blurred:
        er = max(1, int(round(scale))) * (2 if outlined else 1)
        interior = ndimage.binary_erosion(f, structure=_disk(er))
        if interior.sum() < 6 * scale * scale:
            interior = ndimage.binary_erosion(f, structure=_disk(max(1, int(round(scale)))))
        if not interior.any():
            interior = f
    n_int = max(1, int(interior.sum()))
    own = name == color
    yy, xx = np.mgrid[0 : y1 - y0, 0 : x1 - x0]
    ccx, ccy = (x1 - x0 - 1) / 2, (y1 - y0 - 1) / 2
    rad = max(x1 - x0, y1 - y0) / 2
    u, v = (xx - ccx) / rad, (yy - ccy) / rad
    fill = f.sum() / f.size

    # cube: a lit (light tone) band along the top and a shaded side; the front face (base tone) then
    # fills the lower left of the footprint, leaving the top and right to the other two faces
    front = f & own & (role == "base")
    gaps = {"main": (0.0, 0.0)}
    if front.any():
        fl, fn = ndimage.label(front)
        main = fl == (int(np.argmax(ndimage.sum(front, fl, range(1, fn + 1)))) + 1)
        fy, fx = np.nonzero(main)
        gaps["main"] = (fy.min() / f.shape[0], (f.shape[1] - 1 - fx.max()) / f.shape[1])
    light = f & own & (role == "light")
    if blurred:
        tops = np.count_nonzero(light & (v < -0.2)) > 0.03 * f.sum()
        cube = min(gaps["main"]) > 0.15 and tops and fill > 0.7
    else:
        cube = np.count_nonzero(light & (v < -0.2)) - np.count_nonzero(light & (v > 0.2)) > 0.05 * f.sum()
    if cube:
        det.shape = "cube"
        gap_top, gap_right = gaps["main"]
        if gap_right > 0.45 and gap_right > gap_top:
            det.view = "side"
        elif gap_top > 0.45:
            det.view = "top"
        else:
            det.view = "front"
        return det

    # face: a round footprint with ink at both eye positions
    base_rgb = np.asarray(COLORS[color], np.float32)
    ink_rgb = np.asarray(INK_DARK, np.float32)
    half = np.linalg.norm(base_rgb - ink_rgb) / 2
    inkness = np.clip((half - np.linalg.norm(img[y0:y1, x0:x1] - ink_rgb, axis=-1)) / half, 0, 1) * f
    if 0.65 < fill < 0.9:
        eyes = [((u - s * 0.38) ** 2 + (v + 0.3) ** 2) <= 0.15**2 for s in (-1, 1)]
        if all(e.any() and inkness[e].max() > 0.2 for e in eyes):
            det.shape = "face"
            mouth = inkness * (v > 0.1) * (u * u + v * v < 0.8**2)
            mid = mouth * (np.abs(u) < 0.2)
            sides = mouth * (np.abs(u) > 0.3)
            det.expression = "smile"
            if mid.sum() > 0 and sides.sum() > 0:
                if (v * mid).sum() / mid.sum() < (v * sides).sum() / sides.sum():
                    det.expression = "frown"
            return det

    aspect = w / max(h, 1e-6)
    if fill > (0.88 if blurred else 0.9) and 0.8 < aspect < 1.25:
        det.shape = "square"
    elif fill > 0.68:
        det.shape = "circle"
    else:
        # triangles are convex with the centroid a sixth of the extent off centre; stars are neither
        my, mx = yy[f].mean() - ccy, xx[f].mean() - ccx
        off = max(abs(mx), abs(my)) / max(x1 - x0, y1 - y0)
        if _convex_fill(f) > 0.85 and off > 0.08:
            det.shape = "triangle"
            if abs(my) >= abs(mx):
                det.rotation = 0 if my > 0 else 180
            else:
                det.rotation = 270 if mx > 0 else 90
        else:
            det.shape = "star"
    dark = interior & own & (role == "dark")
    det.texture = _texture(interior, dark, np.count_nonzero(dark) / n_int, scale)
    return det


def _convex_fill(f: np.ndarray) -> float:
    """Area of ``f`` over the area of its row-wise/column-wise convex closure (a cheap solidity)."""
    closed = np.zeros_like(f)
    for i, row in enumerate(f):
        idx = np.flatnonzero(row)
        if idx.size:
            closed[i, idx[0] : idx[-1] + 1] = True
    cols = np.zeros_like(f)
    for j, col in enumerate(f.T):
        idx = np.flatnonzero(col)
        if idx.size:
            cols[idx[0] : idx[-1] + 1, j] = True
    return float(f.sum() / max(1, (closed & cols).sum()))


def _texture(interior: np.ndarray, dark: np.ndarray, dark_frac: float, scale: float) -> str:
    """Solid, striped (whole rows dark) or dotted (isolated dark spots)."""
    if dark_frac < 0.05:
        return "solid"
    rows = [
        np.count_nonzero(dark[i] & interior[i]) / n
        for i in range(interior.shape[0])
        if (n := np.count_nonzero(interior[i])) >= 5 * scale
    ]
    full = np.mean([r > 0.75 for r in rows]) if rows else 0.0
    return "striped" if full >= 0.2 else "dotted"


def analyse(image: np.ndarray) -> Reading:
    """Read background, style and objects from an RGB image (any size, uint8 or float 0..255)."""
    img = np.asarray(image, np.float32)[..., :3]
    if np.asarray(image).dtype != np.uint8 and img.max() <= 1.0 + 1e-6:
        img = img * 255.0
    size = img.shape[0]
    scale = size / _UNIT
    lab, dist = _labels(img)
    blurred = _is_blurred(lab, dist)
    counts = np.bincount(lab.ravel(), minlength=len(_LABELS))
    bg_idx = max(range(len(_BG_NAMES)), key=lambda i: counts[i])
    background = _BG_NAMES[bg_idx]
    ink = ink_for(background)

    obj_mask = _IS_OBJ[lab]
    if blurred:
        # blends of background and outline ink (greys on white/black) can snap to some object tone
        s0 = np.asarray(BACKGROUNDS[background], np.float32)
        axis = np.asarray(ink, np.float32) - s0
        alpha = np.clip((img - s0) @ axis / float(axis @ axis), 0, 1)
        obj_mask &= np.linalg.norm(img - (s0 + alpha[..., None] * axis), axis=-1) > 22
    comps, _ = ndimage.label(obj_mask, structure=np.ones((3, 3), bool))
    min_area = 30 * scale * scale
    footprints: list[np.ndarray] = []
    surrounds = [BACKGROUNDS[background], ink]
    for k, sl in enumerate(ndimage.find_objects(comps), start=1):
        if sl is not None and np.count_nonzero(comps[sl] == k) >= min_area:
            fp = ndimage.binary_fill_holes(comps == k)
            fp = _clean(fp, img, lab, scale, surrounds) if blurred else fp
            if fp.sum() >= min_area:
                footprints.append(fp)
    # style: the ring just outside each object leans towards the ink (beyond a blend of object and background)
    bg_rgb = np.asarray(BACKGROUNDS[background], np.float32)
    axis = np.asarray(ink, np.float32) - bg_rgb
    toward_ink = ((img - bg_rgb) @ axis) / float(axis @ axis)
    votes = []
    ring_r = max(1, int(round(2 * scale)))
    for fp in footprints:
        ring = ndimage.binary_dilation(fp, structure=_disk(ring_r)) & ~fp
        if ring.any():
            votes.append(np.mean(toward_ink[ring] > 0.42) > 0.25)
    style = "outline" if votes and np.mean(votes) > 0.5 else "flat"
    objects = [_measure(img, lab, fp, scale, style == "outline", blurred) for fp in footprints]
    objects.sort(key=lambda o: (o.y, o.x))
    return Reading(background, style, objects)


# ----------------------------------------------------------------------------------------------------
# scoring


def _object_checks(det: Detected | None, obj: Obj, skip: tuple[str, ...] = ()) -> list[bool]:
    keys = ["shape", "color", "size", "texture"]
    if obj.shape == "triangle":
        keys.append("rotation")
    if obj.shape == "face":
        keys.append("expression")
    if obj.shape == "cube":
        keys.append("view")
    return [det is not None and getattr(det, k) == getattr(obj, k) for k in keys if k not in skip]


def edit_accuracy(image: np.ndarray, meta: dict[str, Any]) -> float:
    """1.0 when the oracle reads the requested change in ``image``, else 0.0 (``meta`` = WorldEdit.meta())."""
    m = meta.get("shapesworld", meta)
    read = analyse(image)
    src, tgt = Scene.from_dict(m["source"]), Scene.from_dict(m["target"])
    attr, idx = m["attribute"], m["edited_index"]
    task = m["task_type"]
    if attr == "background":
        return float(read.background == tgt.background)
    if attr == "style":
        return float(read.style == tgt.style)
    if task == "object_removal":
        old = src.objects[idx]
        return float(read.at(old.x, old.y) is None)
    obj = tgt.objects[idx]
    det = read.at(obj.x, obj.y)
    if det is None:
        return 0.0
    if task == "object_addition":
        return float(det.shape == obj.shape and det.color == obj.color)
    if attr == "position":
        old = src.objects[idx]
        return float(det.shape == obj.shape and det.color == obj.color and read.at(old.x, old.y) is None)
    return float(getattr(det, attr) == getattr(obj, attr))


def preservation(image: np.ndarray, meta: dict[str, Any]) -> float:
    """Share of the attributes that should not change (other objects, background, style, the edited
    object's other attributes, object count) that match the target scene."""
    m = meta.get("shapesworld", meta)
    read = analyse(image)
    tgt = Scene.from_dict(m["target"])
    attr, idx, task = m["attribute"], m["edited_index"], m["task_type"]
    checks: list[bool] = [len(read.objects) == len(tgt.objects)]
    if attr != "background":
        checks.append(read.background == tgt.background)
    if attr != "style" and tgt.objects:
        checks.append(read.style == tgt.style)
    for i, obj in enumerate(tgt.objects):
        det = read.at(obj.x, obj.y)
        if attr in ("background", "style") or task == "object_removal" or i != idx:
            checks += _object_checks(det, obj)
        elif task == "object_addition":
            continue
        elif attr == "position":
            checks += _object_checks(det, obj)
        else:
            skip = (attr,) + (("rotation", "expression", "view") if attr == "shape" else ())
            checks += _object_checks(det, obj, skip=skip)
    return float(np.mean(checks)) if checks else 1.0


def scene_accuracy(image: np.ndarray, scene: Scene) -> dict[str, bool]:
    """Text-to-image checks: background, multiset of colours, multiset of shapes, object count."""
    read = analyse(image)
    return {
        "background": read.background == scene.background,
        "colors": sorted(o.color for o in read.objects) == sorted(o.color for o in scene.objects),
        "shapes": sorted(o.shape for o in read.objects) == sorted(o.shape for o in scene.objects),
        "count": len(read.objects) == len(scene.objects),
    }


def attribute_accuracy(image: np.ndarray, scene: Scene) -> dict[str, float]:
    """Per-attribute share of ``scene``'s attributes the oracle reads correctly (objects matched by cell)."""
    read = analyse(image)
    out: dict[str, list[bool]] = {"background": [read.background == scene.background]}
    if scene.objects:
        out["style"] = [read.style == scene.style]
    out["count"] = [len(read.objects) == len(scene.objects)]
    for obj in scene.objects:
        det = read.at(obj.x, obj.y)
        out.setdefault("present", []).append(det is not None)
        for k in ("shape", "color", "size", "texture", "rotation", "expression", "view"):
            if k == "rotation" and obj.shape != "triangle":
                continue
            if k == "expression" and obj.shape != "face":
                continue
            if k == "view" and obj.shape != "cube":
                continue
            out.setdefault(k, []).append(det is not None and getattr(det, k) == getattr(obj, k))
    return {k: float(np.mean(v)) for k, v in out.items()}
