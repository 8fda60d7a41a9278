"""The synthetic shapes world: scenes, splits and a deterministic renderer.

A scene holds 1-4 coloured shapes, each in its own cell of a 3 x 3 grid, on a background
that varies in tone, gradient and noise. Everything is a pure function of a split name and an
index, so `make_scene("test", 7)` is the same scene on every machine, and `render(scene, size)`
draws it at any resolution with the same pixels for the same arguments. Captions and
questions about scenes live in `mbm.data.language`.

Some (colour, shape) combinations never appear in the `train` split (`HELD_OUT`): the
`heldout` split contains at least one of them in every scene, to test composition.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle", "star", "hexagon", "cross", "diamond", "heart")
COLOURS = {  # name -> base RGB; each object jitters around it
    "red": (220, 40, 40),
    "orange": (245, 140, 20),
    "yellow": (245, 220, 30),
    "green": (40, 170, 60),
    "blue": (40, 90, 220),
    "purple": (140, 60, 200),
    "pink": (245, 130, 200),
    "brown": (125, 75, 35),
    "white": (248, 248, 248),
    "black": (18, 18, 18),
}
SIZES = {"small": 0.20, "medium": 0.25, "large": 0.31}  # diameter as a fraction of the image side
ROWS = ("top", "middle", "bottom")
COLS = ("left", "center", "right")
SPLITS = ("train", "val", "test", "heldout")
# One combination per shape and per colour, so every word is still seen in training.
HELD_OUT = frozenset({
    ("red", "star"), ("orange", "hexagon"), ("yellow", "heart"), ("green", "triangle"),
    ("blue", "cross"), ("purple", "circle"), ("pink", "square"), ("brown", "diamond"),
})
MAX_OBJECTS = 4


@dataclass(frozen=True)
class Obj:
    shape: str
    colour: str
    size: str
    row: int  # 0..2, top to bottom
    col: int  # 0..2, left to right
    cx: float  # centre, as a fraction of the image width
    cy: float  # centre, as a fraction of the image height
    rgb: tuple[int, int, int]  # the jittered colour actually drawn


@dataclass(frozen=True)
class Scene:
    objects: tuple[Obj, ...]  # in reading order (row, then column)
    background: tuple  # (style, rgb_a, rgb_b, noise_seed)

    def replace_object(self, i: int, **changes) -> Scene:
        """The same scene with object `i` changed (e.g. `shape="star"`): a minimal pair."""
        objs = list(self.objects)
        o = objs[i]
        if "colour" in changes and "rgb" not in changes:
            changes["rgb"] = _jitter(COLOURS[changes["colour"]], random.Random(str(o.rgb)))
        objs[i] = Obj(**{**o.__dict__, **changes})
        return Scene(tuple(objs), self.background)


def make_scene(split: str, index: int, n_objects: int | None = None) -> Scene:
    """The scene number `index` of a split, the same on every machine.

    Args:
        split: one of `SPLITS`; `train`, `val` and `test` avoid `HELD_OUT` combinations,
            `heldout` puts at least one in every scene.
        index: any integer; different splits never share a random stream.
        n_objects: force the number of objects (1-4); default random, one object in a third of scenes.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose from {SPLITS}")
    rng = random.Random(f"mbm-shapes/{split}/{index}")
    n = n_objects or (1 if rng.random() < 1 / 3 else rng.randint(2, MAX_OBJECTS))
    if not 1 <= n <= MAX_OBJECTS:
        raise ValueError(f"n_objects must be 1-{MAX_OBJECTS}, got {n}")
    cells = sorted(rng.sample(range(9), n))
    must_hold_out = rng.randrange(n) if split == "heldout" else -1
    objects = tuple(_sample_object(rng, divmod(c, 3), held_out=(i == must_hold_out),
                                   allow_held_out=split == "heldout")
                    for i, c in enumerate(cells))
    return Scene(objects, _sample_background(rng))


def _sample_object(rng: random.Random, cell: tuple[int, int], held_out: bool, allow_held_out: bool) -> Obj:
    if held_out:
        colour, shape = rng.choice(sorted(HELD_OUT))
    else:
        while True:
            colour, shape = rng.choice(list(COLOURS)), rng.choice(SHAPES)
            if allow_held_out or (colour, shape) not in HELD_OUT:
                break
    size = rng.choice(list(SIZES))
    slack = (1 / 3 - SIZES[size]) / 2  # how far the centre may move and stay inside its cell
    row, col = cell
    cx = (col + 0.5) / 3 + rng.uniform(-slack, slack)
    cy = (row + 0.5) / 3 + rng.uniform(-slack, slack)
    return Obj(shape, colour, size, row, col, cx, cy, _jitter(COLOURS[colour], rng))


def _jitter(rgb: tuple[int, int, int], rng: random.Random, amount: int = 14) -> tuple[int, int, int]:
    return tuple(min(255, max(0, c + rng.randint(-amount, amount))) for c in rgb)


def _sample_background(rng: random.Random) -> tuple:
    # Mid tones of low saturation, so that white, black and every hue stand out.
    def tone() -> tuple[int, int, int]:
        grey = rng.randint(95, 170)
        return tuple(grey + rng.randint(-18, 18) for _ in range(3))
    style = rng.choice(("flat", "flat", "vertical", "horizontal", "noise"))
    return (style, tone(), tone(), rng.randrange(2**31))


def render(scene: Scene, size: int = 64, supersample: int = 2) -> Image.Image:
    """Draw a scene as an RGB image of `size` x `size` pixels (anti-aliased by supersampling)."""
    s = size * supersample
    img = _render_background(scene.background, s)
    draw = ImageDraw.Draw(img)
    for o in scene.objects:
        _draw_shape(draw, o.shape, o.cx * s, o.cy * s, SIZES[o.size] * s / 2, o.rgb)
    return img.resize((size, size), Image.Resampling.BOX) if supersample > 1 else img


def _render_background(bg: tuple, s: int) -> Image.Image:
    style, a, b, seed = bg
    a, b = np.array(a, np.float32), np.array(b, np.float32)
    t = np.linspace(0.0, 1.0, s, dtype=np.float32)
    if style == "flat":
        arr = np.broadcast_to(a, (s, s, 3))
    elif style == "vertical":
        arr = a + (b - a) * t[:, None, None]
        arr = np.broadcast_to(arr, (s, s, 3))
    elif style == "horizontal":
        arr = a + (b - a) * t[None, :, None]
        arr = np.broadcast_to(arr, (s, s, 3))
    else:  # noise: soft grain around the first tone
        grain = np.random.default_rng(seed).normal(0.0, 10.0, (s, s, 1)).astype(np.float32)
        arr = a + grain
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float, rgb) -> None:
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=rgb)
    else:
        draw.polygon([(cx + x * r, cy + y * r) for x, y in _OUTLINES[shape]], fill=rgb)


def _regular(n: int, phase: float, radius: float = 1.0) -> list[tuple[float, float]]:
    return [(radius * math.cos(phase + 2 * math.pi * k / n), radius * math.sin(phase + 2 * math.pi * k / n))
            for k in range(n)]


def _star() -> list[tuple[float, float]]:
    outer, inner = _regular(5, -math.pi / 2), _regular(5, -math.pi / 2 + math.pi / 5, 0.42)
    return [p for pair in zip(outer, inner) for p in pair]


def _heart() -> list[tuple[float, float]]:
    pts = []
    for k in range(48):
        t = 2 * math.pi * k / 48
        x = 16 * math.sin(t) ** 3
        y = 13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t)
        pts.append((x / 16.5, -(y + 2.5) / 15.0))
    return pts


_W = 0.36  # half the width of a cross's arm
# Unit outlines (radius 1) for every polygonal shape; squares are scaled to a similar area as circles.
_OUTLINES = {
    "square": [(-0.85, -0.85), (0.85, -0.85), (0.85, 0.85), (-0.85, 0.85)],
    "triangle": [(0.0, -1.0), (0.95, 0.75), (-0.95, 0.75)],
    "star": _star(),
    "hexagon": _regular(6, 0.0),
    "cross": [(-_W, -1), (_W, -1), (_W, -_W), (1, -_W), (1, _W), (_W, _W), (_W, 1), (-_W, 1),
              (-_W, _W), (-1, _W), (-1, -_W), (-_W, -_W)],
    "diamond": [(0.0, -1.0), (1.0, 0.0), (0.0, 1.0), (-1.0, 0.0)],
    "heart": _heart(),
}
