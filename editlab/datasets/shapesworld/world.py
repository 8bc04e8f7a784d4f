"""ShapesWorld: a procedural scene world with exact ground truth for every editing task.

A scene is one to three flat-coloured objects on a plain background, each object placed in a cell of a
3x3 grid (``x`` = column, ``y`` = row, 0..2). Objects carry a shape, colour, size, texture and, for the
shapes where they make sense, a rotation (triangles), an expression (faces) or a view (cubes). The
whole scene is drawn either ``flat`` or in ``outline`` style (every object gets a contrasting ink
contour). Rendering is pure numpy, deterministic and exact: there is no anti-aliasing, so every pixel
has one of a small set of palette colours. All geometry is expressed in units of a 64 px canvas and
scaled to the requested ``size``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from scipy import ndimage

IMAGE_SIZE = 64
_UNIT = 64.0  # geometry is defined on a 64 x 64 canvas

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (40, 80, 220),
    "yellow": (240, 210, 40),
    "purple": (150, 60, 200),
    "orange": (245, 140, 30),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (245, 245, 245),
    "gray": (128, 128, 128),
    "black": (20, 20, 20),
    "teal": (0, 128, 128),
    "pink": (255, 190, 220),
}
INK_DARK: tuple[int, int, int] = (20, 20, 20)  # face features, outlines on light backgrounds
INK_LIGHT: tuple[int, int, int] = (245, 245, 245)  # outlines on the black background
DARK_FACTOR = 0.55  # texture marks and the shaded side of a cube
LIGHT_MIX = 0.5  # the lit top of a cube: mix of the colour with white

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "face", "cube")
SIZES: dict[str, float] = {"small": 15.0, "large": 26.0}  # object extent on the 64 px canvas
TEXTURES: tuple[str, ...] = ("solid", "striped", "dotted")
TEXTURED_SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star")
ROTATIONS: tuple[int, ...] = (0, 90, 180, 270)  # clockwise from pointing up; triangles only
DIRECTIONS: dict[int, str] = {0: "up", 90: "right", 180: "down", 270: "left"}
EXPRESSIONS: tuple[str, ...] = ("smile", "frown")
VIEWS: tuple[str, ...] = ("front", "side", "top")
STYLES: tuple[str, ...] = ("flat", "outline")
GRID: tuple[float, ...] = (0.22, 0.5, 0.78)  # cell centres as image fractions
POSITIONS: dict[tuple[int, int], str] = {
    (0, 0): "top left",
    (1, 0): "top",
    (2, 0): "top right",
    (0, 1): "left",
    (1, 1): "center",
    (2, 1): "right",
    (0, 2): "bottom left",
    (1, 2): "bottom",
    (2, 2): "bottom right",
}
OUTLINE_WIDTH = 2.0  # ink contour width on the 64 px canvas
_GAP = 1.0  # minimum free space between two objects' outlined footprints (64 px canvas)

_EXPRESSION_WORDS = {"smile": "smiling", "frown": "frowning"}
_VIEW_PHRASES = {"front": "from the front", "side": "from the side", "top": "from above"}

# Words used by edit instructions (see tasks.py); listed here so vocabulary() is complete.
INSTRUCTION_WORDS: tuple[str, ...] = tuple(
    """add remove delete replace with make the a an turn into change to background color of move rotate so it
    points point smile frown show from view texture draw scene in style bigger smaller larger solid plain give
    stripes dots outlines without flat outline put side top front above seen on at and is be face cube there""".split()
)


@dataclass(frozen=True)
class Obj:
    """One object. ``x``/``y`` are grid cells (column/row, 0..2)."""

    shape: str
    color: str
    size: str
    x: int
    y: int
    texture: str = "solid"
    rotation: int = 0
    expression: str | None = None
    view: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Obj:
        return cls(**d)

    @property
    def position(self) -> str:
        """Position name of the grid cell, e.g. ``"top left"``."""
        return POSITIONS[(self.x, self.y)]

    @property
    def centre(self) -> tuple[float, float]:
        """Centre as image fractions (x, y)."""
        return GRID[self.x], GRID[self.y]


@dataclass(frozen=True)
class Scene:
    """A background, a rendering style and up to three non-overlapping objects."""

    objects: tuple[Obj, ...]
    background: str
    style: str = "flat"

    def to_dict(self) -> dict[str, Any]:
        return {"objects": [o.to_dict() for o in self.objects], "background": self.background, "style": self.style}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Scene:
        return cls(
            objects=tuple(Obj.from_dict(o) for o in d["objects"]),
            background=d["background"],
            style=d.get("style", "flat"),
        )

    def replace_object(self, index: int, obj: Obj | None) -> Scene:
        """A copy with object ``index`` replaced (or removed when ``obj`` is None)."""
        objs = list(self.objects)
        if obj is None:
            del objs[index]
        else:
            objs[index] = obj
        return Scene(tuple(objs), self.background, self.style)


# ----------------------------------------------------------------------------------------------------
# geometry


def dark_shade(color: tuple[int, int, int]) -> tuple[int, int, int]:
    """The darker tone of a colour (texture marks, cube sides)."""
    return tuple(int(round(c * DARK_FACTOR)) for c in color)  # type: ignore[return-value]


def light_shade(color: tuple[int, int, int]) -> tuple[int, int, int]:
    """The lighter tone of a colour (cube tops)."""
    return tuple(int(round(c * (1 - LIGHT_MIX) + 255 * LIGHT_MIX)) for c in color)  # type: ignore[return-value]


def ink_for(background: str) -> tuple[int, int, int]:
    """Outline ink contrasting with ``background``."""
    return INK_LIGHT if background == "black" else INK_DARK


def _convex(u: np.ndarray, v: np.ndarray, pts: list[tuple[float, float]]) -> np.ndarray:
    """Points (u, v) inside the convex polygon ``pts`` (any orientation)."""
    pos = np.ones(u.shape, bool)
    neg = np.ones(u.shape, bool)
    n = len(pts)
    for i in range(n):
        (x0, y0), (x1, y1) = pts[i], pts[(i + 1) % n]
        cross = (x1 - x0) * (v - y0) - (y1 - y0) * (u - x0)
        pos &= cross >= -1e-9
        neg &= cross <= 1e-9
    return pos | neg


def _rotate(pts: list[tuple[float, float]], deg: int) -> list[tuple[float, float]]:
    """Rotate points clockwise on screen (y down) by a multiple of 90 degrees."""
    k = (deg // 90) % 4
    out = []
    for u, v in pts:
        for _ in range(k):
            u, v = -v, u
        out.append((u, v))
    return out


def _extent(obj: Obj) -> float:
    """Half of the object's bounding extent on the 64 px canvas (before outline)."""
    return SIZES[obj.size] / 2.0


def _layers(obj: Obj, u: np.ndarray, v: np.ndarray) -> dict[str, np.ndarray]:
    """Boolean layers in object-local coordinates (64 px canvas units, centred on the object).

    ``body`` is the whole footprint; ``dark``/``light``/``ink`` mark pixels of the body drawn in the dark
    tone, the light tone or the feature ink.
    """
    d = SIZES[obj.size]
    h = d / 2.0
    zero = np.zeros(u.shape, bool)
    dark, light, ink = zero, zero, zero
    if obj.shape == "circle":
        body = u * u + v * v <= h * h
    elif obj.shape == "square":
        s = 0.43 * d
        body = (np.abs(u) <= s) & (np.abs(v) <= s)
    elif obj.shape == "triangle":
        pts = _rotate([(0.0, -h), (h, h), (-h, h)], obj.rotation)
        body = _convex(u, v, pts)
    elif obj.shape == "star":
        r_out, r_in = 0.54 * d, 0.54 * d * 0.45
        dv = r_out * (1 - np.cos(np.pi / 5)) / 2  # centre the bounding box vertically
        ang_o = np.deg2rad(-90 + 72 * np.arange(5))
        ang_i = ang_o + np.deg2rad(36)
        outer = [(r_out * np.cos(a), r_out * np.sin(a) - dv) for a in ang_o]
        inner = [(r_in * np.cos(a), r_in * np.sin(a) - dv) for a in ang_i]
        body = _convex(u, v, inner)
        for k in range(5):
            body = body | _convex(u, v, [outer[k], inner[k], inner[k - 1]])
    elif obj.shape == "face":
        body = u * u + v * v <= h * h
        ex, ey, er = 0.38 * h, -0.3 * h, 0.22 * h
        eyes = ((u - ex) ** 2 + (v - ey) ** 2 <= er * er) | ((u + ex) ** 2 + (v - ey) ** 2 <= er * er)
        ro, ri = 0.6 * h, 0.3 * h
        if obj.expression == "frown":
            c = 0.78 * h
            rr = u * u + (v - c) ** 2
            mouth = (rr <= ro * ro) & (rr >= ri * ri) & (v <= c - 0.18 * h)
        else:
            c = 0.02 * h
            rr = u * u + (v - c) ** 2
            mouth = (rr <= ro * ro) & (rr >= ri * ri) & (v >= c + 0.18 * h)
        ink = body & (eyes | mouth)
    elif obj.shape == "cube":
        e = 0.92 * h
        sx, ty = {"front": (0.28, 0.28), "side": (0.6, 0.3), "top": (0.3, 0.6)}[obj.view or "front"]
        s, t = sx * 2 * e, ty * 2 * e
        front = (u >= -e) & (u <= e - s) & (v >= -e + t) & (v <= e)
        top = _convex(u, v, [(-e, -e + t), (-e + s, -e), (e, -e), (e - s, -e + t)]) & ~front
        side = _convex(u, v, [(e - s, -e + t), (e, -e), (e, e - t), (e - s, e)]) & ~front & ~top
        body = front | top | side
        light, dark = top, side
    else:
        raise ValueError(f"unknown shape {obj.shape!r}")
    if obj.texture == "striped":
        p = 6.0
        dark = body & (np.mod(v, p) < p / 2)
    elif obj.texture == "dotted":
        p = 6.0
        du = np.mod(u + p / 2, p) - p / 2
        dv2 = np.mod(v + p / 2, p) - p / 2
        dark = body & (du * du + dv2 * dv2 <= 1.6**2)
    return {"body": body, "dark": dark & body, "light": light & body, "ink": ink}


@lru_cache(maxsize=64)
def _disk(radius_px: float) -> np.ndarray:
    r = int(np.ceil(radius_px))
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    return xx * xx + yy * yy <= radius_px * radius_px + 1e-9


def _window(obj: Obj, size: int, pad: float) -> tuple[int, int, int, int, np.ndarray, np.ndarray]:
    """Pixel window (y0, y1, x0, x1) around the object and local coordinates of its pixel centres."""
    scale = size / _UNIT
    fx, fy = obj.centre
    cx, cy = fx * _UNIT, fy * _UNIT
    r = _extent(obj) * 1.2 + pad + 1
    x0 = max(0, int(np.floor((cx - r) * scale)))
    x1 = min(size, int(np.ceil((cx + r) * scale)) + 1)
    y0 = max(0, int(np.floor((cy - r) * scale)))
    y1 = min(size, int(np.ceil((cy + r) * scale)) + 1)
    px = (np.arange(x0, x1) + 0.5) / scale - cx
    py = (np.arange(y0, y1) + 0.5) / scale - cy
    u, v = np.meshgrid(px, py)
    return y0, y1, x0, x1, u, v


def _object_pixels(
    obj: Obj, size: int, outlined: bool
) -> tuple[tuple[slice, slice], dict[str, np.ndarray], np.ndarray]:
    """Window slices, layers and the (outline-inclusive when ``outlined``) footprint of an object."""
    y0, y1, x0, x1, u, v = _window(obj, size, OUTLINE_WIDTH + _GAP)
    layers = _layers(obj, u, v)
    if outlined:
        w = OUTLINE_WIDTH * size / _UNIT
        foot = ndimage.binary_dilation(layers["body"], structure=_disk(max(w, 1.0)))
    else:
        foot = layers["body"]
    return (slice(y0, y1), slice(x0, x1)), layers, foot


# ----------------------------------------------------------------------------------------------------
# rendering


def render(scene: Scene, size: int = IMAGE_SIZE) -> np.ndarray:
    """Draw ``scene`` as a (size, size, 3) uint8 array; deterministic, no anti-aliasing."""
    img = np.empty((size, size, 3), np.uint8)
    img[:] = BACKGROUNDS[scene.background]
    outlined = scene.style == "outline"
    ink_outline = ink_for(scene.background)
    for obj in scene.objects:
        sl, layers, foot = _object_pixels(obj, size, outlined)
        win = img[sl]
        base = COLORS[obj.color]
        if outlined:
            win[foot & ~layers["body"]] = ink_outline
        win[layers["body"]] = base
        win[layers["dark"]] = dark_shade(base)
        win[layers["light"]] = light_shade(base)
        win[layers["ink"]] = INK_DARK
    return img


def object_mask(scene: Scene, index: int, size: int = IMAGE_SIZE) -> np.ndarray:
    """(size, size) bool mask of every pixel object ``index`` paints (its outline included)."""
    mask = np.zeros((size, size), bool)
    sl, _, foot = _object_pixels(scene.objects[index], size, scene.style == "outline")
    mask[sl] = foot
    return mask


def _footprint64(obj: Obj) -> np.ndarray:
    """Outlined footprint on the 64 px canvas, grown by the required gap (used for placement)."""
    return _cached_footprint(obj.shape, obj.size, obj.x, obj.y, obj.rotation, obj.view)


@lru_cache(maxsize=4096)
def _cached_footprint(shape: str, size: str, x: int, y: int, rotation: int, view: str | None) -> np.ndarray:
    obj = Obj(shape, "red", size, x, y, rotation=rotation, view=view, expression="smile" if shape == "face" else None)
    full = np.zeros((IMAGE_SIZE, IMAGE_SIZE), bool)
    sl, layers, _ = _object_pixels(obj, IMAGE_SIZE, False)
    full[sl] = layers["body"]
    grown = ndimage.binary_dilation(full, structure=_disk(OUTLINE_WIDTH + _GAP / 2))
    grown.setflags(write=False)
    return grown


def fits(objects: tuple[Obj, ...] | list[Obj], obj: Obj, ignore: int | None = None) -> bool:
    """Whether ``obj`` can be placed among ``objects`` (optionally ignoring index ``ignore``) without touching."""
    fp = _footprint64(obj)
    for i, other in enumerate(objects):
        if i == ignore:
            continue
        if (other.x, other.y) == (obj.x, obj.y) or np.any(fp & _footprint64(other)):
            return False
    return True


# ----------------------------------------------------------------------------------------------------
# sampling


def random_object(rng: np.random.Generator, x: int = 1, y: int = 1, shape: str | None = None) -> Obj:
    """An object with random attributes at cell (x, y)."""
    shape = shape or str(rng.choice(SHAPES))
    color = str(rng.choice(list(COLORS)))
    size = str(rng.choice(list(SIZES)))
    texture = str(rng.choice(TEXTURES)) if shape in TEXTURED_SHAPES else "solid"
    rotation = int(rng.choice(ROTATIONS)) if shape == "triangle" else 0
    expression = str(rng.choice(EXPRESSIONS)) if shape == "face" else None
    view = str(rng.choice(VIEWS)) if shape == "cube" else None
    return Obj(shape, color, size, x, y, texture, rotation, expression, view)


def free_cells(objects: tuple[Obj, ...] | list[Obj], obj: Obj, ignore: int | None = None) -> list[tuple[int, int]]:
    """Grid cells where ``obj`` (moved there) would fit."""
    out = []
    for x, y in POSITIONS:
        cand = Obj(**{**obj.to_dict(), "x": x, "y": y})
        if fits(objects, cand, ignore):
            out.append((x, y))
    return out


def sample_scene(rng: np.random.Generator, n_objects: int | None = None, require: str | None = None) -> Scene:
    """A random scene of ``n_objects`` (1-3 when None) non-overlapping objects.

    ``require`` forces the first object's shape (edit tasks need e.g. a face or a cube).
    """
    n = int(rng.integers(1, 4)) if n_objects is None else n_objects
    if not 0 <= n <= 3:
        raise ValueError(f"n_objects must be in 0..3, got {n}")
    if require is not None and n < 1:
        raise ValueError("a required shape needs at least one object")
    while True:
        objs: list[Obj] = []
        for k in range(n):
            obj = random_object(rng, shape=require if k == 0 else None)
            cells = free_cells(objs, obj)
            if not cells:
                obj = Obj(**{**obj.to_dict(), "size": "small"})
                cells = free_cells(objs, obj)
            if not cells:
                break
            x, y = cells[int(rng.integers(len(cells)))]
            objs.append(Obj(**{**obj.to_dict(), "x": x, "y": y}))
        if len(objs) == n:
            break
    background = str(rng.choice(list(BACKGROUNDS)))
    style = "outline" if rng.random() < 0.3 else "flat"
    return Scene(tuple(objs), background, style)


# ----------------------------------------------------------------------------------------------------
# language


def object_phrase(obj: Obj, with_position: bool = True) -> str:
    """E.g. ``"a large red striped triangle pointing left at top right"``."""
    words = [obj.size, obj.color]
    if obj.texture != "solid":
        words.append(obj.texture)
    if obj.shape == "face":
        words.append(_EXPRESSION_WORDS[obj.expression or "smile"])
    words.append(obj.shape)
    if obj.shape == "triangle":
        words += ["pointing", DIRECTIONS[obj.rotation]]
    if obj.shape == "cube":
        words.append(_VIEW_PHRASES[obj.view or "front"])
    if with_position:
        words += ["at", obj.position]
    return "a " + " ".join(words)


def caption(scene: Scene) -> str:
    """Text description naming every varying attribute, e.g. ``"a large red circle at top left and a
    small blue striped square at center on a white background"`` (at most 39 words)."""
    parts = [object_phrase(o) for o in scene.objects]
    if parts:
        text = " and ".join(parts) + f" on a {scene.background} background"
    else:
        text = f"a plain {scene.background} background"
    if scene.style == "outline":
        text += " in outline style"
    return text


def vocabulary() -> list[str]:
    """Every word any caption, prompt or instruction can contain (sorted, lowercase)."""
    words: set[str] = set(INSTRUCTION_WORDS)
    words |= set(COLORS) | set(BACKGROUNDS) | set(SHAPES) | set(SIZES) | set(TEXTURES) | set(STYLES)
    words |= set(EXPRESSIONS) | set(_EXPRESSION_WORDS.values()) | set(VIEWS)
    words |= set(DIRECTIONS.values())
    for phrase in list(_VIEW_PHRASES.values()) + list(POSITIONS.values()):
        words |= set(phrase.split())
    words |= {"a", "at", "the", "and", "on", "background", "pointing", "in", "style", "plain"}
    return sorted(words)


def train_batch(rng: np.random.Generator, batch_size: int, size: int = IMAGE_SIZE) -> tuple[np.ndarray, list[str]]:
    """``batch_size`` random scenes: (B, size, size, 3) uint8 images and their captions."""
    imgs = np.empty((batch_size, size, size, 3), np.uint8)
    caps: list[str] = []
    for i in range(batch_size):
        scene = sample_scene(rng)
        imgs[i] = render(scene, size)
        caps.append(caption(scene))
    return imgs, caps
