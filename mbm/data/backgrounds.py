"""The widened shapes world: any background, any size, rotated, outlined or hand-drawn, degraded.

`widen(scene, rng)` turns a scene of `mbm.data.shapes` into one that carries a `Look` in its `background`
field: a background kind (`KINDS`: mid grey as before, light, white, black, saturated, gradient, texture,
photo), a drawing style (filled, outline, hand-drawn wobbly strokes), a rotation, a JPEG/blur/noise recipe and,
for a single object, a new size (10-90% of the side) and place, with its size word and grid cell kept true so
captions and questions (`mbm.data.language`) stay right. `render(scene, size)` draws either kind of scene.
Colours are never jittered in hue (colour is meaning), and a flat background never takes an object's colour.
"""

from __future__ import annotations

import io
import math
import random
from dataclasses import dataclass, replace
from functools import cache, lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from mbm.data import shapes
from mbm.data.shapes import SIZES, Scene

KINDS = ("grey", "light", "white", "black", "saturated", "gradient", "texture", "photo")
DRAWINGS = ("filled", "outline", "hand")
UNSEEN_PHOTO = "unseen photo"  # evaluation only, not in KINDS: crops of photos no training run draws (`unseen_photos`)
UNSEEN_TEXTURE = "unseen texture"  # evaluation only: patterns no training run draws (`UNSEEN_TEXTURES`)
PHOTOS = Path(__file__).resolve().parents[2] / "assets" / "gallery" / "photos"
MIN_CONTRAST = 90.0  # RGB distance a flat background keeps from every object's colour
# RGB distance a cluttered background (gradient, texture, photo) keeps, in its mean over each object's box, from
# that object's colour: a brown shape on a lion's mane is not there to see, for a person or a model.
MIN_VISIBLE = 60.0
TONES = {"white": 252, "black": 20, "light": 225, "grey": 132}  # the grey level of the plain kinds
# A square turned by 45 degrees is a diamond: these two turn only a little, so the words keep their meaning.
MAX_TURN = {"square": 12.0, "diamond": 12.0}
TURN = 25.0  # a look turns its shapes by up to this many degrees either way (MAX_TURN caps some further)


@dataclass(frozen=True)
class Look:
    kind: str  # one of KINDS
    drawing: str  # one of DRAWINGS
    rotation: float  # degrees, every object
    seed: int  # the background's and the strokes' randomness
    degrade: bool  # JPEG, blur and noise at the final size
    vary: bool = False  # training only: photo crops flipped and recoloured, textures of more kinds (see `background`)
    clutter: bool = False  # training only, with `vary`: a photo background is a collage of things (`use_clutter`)


def sample_look(rng: random.Random, kind: str | None = None, drawing: str | None = None,
                degrade: bool | None = None, kind_weights: dict[str, float] | None = None,
                vary_share: float = 0.0, clutter_share: float = 0.0) -> Look:
    """A random `Look`; `kind_weights` (kind -> weight, 1 where absent) makes some background kinds likelier,
    `vary_share` of the looks get `vary` (no random draw when 0: the evaluation's scene streams stay as they were)
    and `clutter_share` of those also `clutter`."""
    if kind is None:  # rng.choice without weights: the evaluation's scene streams stay what they were
        kind = rng.choices(KINDS, [kind_weights.get(k, 1.0) for k in KINDS])[0] if kind_weights else rng.choice(KINDS)
    look = Look(kind, drawing or rng.choices(DRAWINGS, weights=(5, 2, 3))[0],
                rng.uniform(-TURN, TURN), rng.randrange(2**31), rng.random() < 0.4 if degrade is None else degrade)
    if vary_share > 0 and rng.random() < vary_share:
        return replace(look, vary=True, clutter=clutter_share > 0 and rng.random() < clutter_share)
    return look


def size_word(diameter: float) -> str:
    """The size word for a diameter (fraction of the side), true to the grid sizes of `SIZES`."""
    return "small" if diameter < 0.225 else "medium" if diameter < 0.28 else "large"


def widen(scene: Scene, rng: random.Random, look: Look | None = None, diameter: float | None = None,
          kind_weights: dict[str, float] | None = None, vary_share: float = 0.0, clutter_share: float = 0.0) -> Scene:
    """The scene with a sampled (or given) `Look`; a single object half of the time gets a new size and place.

    Args:
        diameter: force a single object's diameter (fraction of the side); None samples one (or keeps it).
        kind_weights, vary_share, clutter_share: with no `look`, how likely each background kind is and how often
            a look varies its photo or texture further (see `sample_look`).
    """
    look = look or sample_look(rng, kind_weights=kind_weights, vary_share=vary_share, clutter_share=clutter_share)
    while not fits(look.kind, [o.rgb for o in scene.objects]):
        look = replace(look, kind=rng.choice(KINDS))
    objs = scene.objects
    diameters = tuple(SIZES[o.size] for o in objs)
    if len(objs) == 1 and (diameter is not None or rng.random() < 0.5):
        d = diameter if diameter is not None else rng.uniform(0.1, 0.9)
        cx, cy = rng.uniform(d / 2, 1 - d / 2), rng.uniform(d / 2, 1 - d / 2)
        objs = (replace(objs[0], size=size_word(d), cx=cx, cy=cy, row=min(2, int(cy * 3)), col=min(2, int(cx * 3))),)
        diameters = (d,)
    return Scene(objs, ("wide", look, diameters))


def visible(img: Image.Image, boxes) -> bool:
    """Whether every object `(cx, cy, r, rgb)` (pixels) keeps `MIN_VISIBLE` from the mean of `img` over its box."""
    arr = np.asarray(img, np.float32)
    for cx, cy, r, rgb in boxes:
        box = arr[max(0, round(cy - r)):round(cy + r) + 1, max(0, round(cx - r)):round(cx + r) + 1]
        if box.size and math.dist(box.reshape(-1, 3).mean(axis=0), rgb) < MIN_VISIBLE:
            return False
    return True


def fits(kind: str, colours) -> bool:
    """False where a plain background would hide an object (a white shape on white)."""
    return kind not in TONES or _far((TONES[kind],) * 3, colours)


def render(scene: Scene, size: int = 64, supersample: int = 2) -> Image.Image:
    """Draw a scene of either world as an RGB `size` x `size` image."""
    if scene.background[0] != "wide":
        return shapes.render(scene, size, supersample)
    _, look, diameters = scene.background
    rng = random.Random(look.seed)
    s = size * supersample
    draw_background = lambda: background(look.kind, rng, s, [o.rgb for o in scene.objects],  # noqa: E731
                                         vary=look.vary, clutter=look.clutter)
    img = draw_background()
    if look.kind not in TONES and look.kind != "saturated":  # cluttered: flat kinds keep MIN_CONTRAST already
        boxes = [(o.cx * s, o.cy * s, d * s / 2, o.rgb) for o, d in zip(scene.objects, diameters)]
        for _ in range(20):  # drawn again (the same seed gives the same retries) until every object shows
            if visible(img, boxes):
                break
            img = draw_background()
    draw = ImageDraw.Draw(img)
    for o, d in zip(scene.objects, diameters):
        draw_shape(draw, o.shape, o.cx * s, o.cy * s, d * s / 2, o.rgb, look.drawing, look.rotation, rng)
    img = img.resize((size, size), Image.Resampling.BOX) if supersample > 1 else img
    return degrade(img, rng) if look.degrade else img


def outline(shape: str, rotation: float = 0.0) -> list[tuple[float, float]]:
    """Unit outline (radius 1) of a shape, rotated by `rotation` degrees."""
    pts = shapes._regular(48, 0.0) if shape == "circle" else shapes._OUTLINES[shape]
    c, s = math.cos(math.radians(rotation)), math.sin(math.radians(rotation))
    return [(x * c - y * s, x * s + y * c) for x, y in pts]


@cache
def nearest_shape(shape: str) -> str:
    """The other shape whose silhouette covers `shape`'s best: intersection over union at the same centre and the
    same area, the best over turns of the other up to `TURN`. That is the pair a small image tower tells apart last
    (a circle and a hexagon overlap 93%, a square and a circle 84%, a square and a star 63%); training takes it as a
    hard negative (`mbm.train.clip.make_batch`)."""
    side = 128

    def mask(name: str, turn: float) -> np.ndarray:
        pts = outline(name, turn)
        area = 0.5 * abs(sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in zip(pts, pts[1:] + pts[:1])))
        r = 0.3 * side * math.sqrt(math.pi / area)  # every shape at a circle's area of radius 0.3 x side
        img = Image.new("L", (side, side))
        ImageDraw.Draw(img).polygon([(side / 2 + r * x, side / 2 + r * y) for x, y in pts], fill=1)
        return np.asarray(img, bool)

    a = mask(shape, 0.0)

    def overlap(other: str) -> float:
        turns = range(-round(TURN), round(TURN) + 1, 5)
        return max(float((a & b).sum() / (a | b).sum()) for b in (mask(other, t) for t in turns))
    return max((o for o in shapes.SHAPES if o != shape), key=overlap)


def draw_shape(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float, rgb, drawing: str,
               rotation: float, rng: random.Random) -> None:
    turn = max(-MAX_TURN.get(shape, 90.0), min(MAX_TURN.get(shape, 90.0), rotation))
    pts = [(cx + x * r, cy + y * r) for x, y in outline(shape, turn)]
    if drawing == "filled":
        draw.polygon(pts, fill=rgb)
    elif drawing == "outline":
        draw.line(pts + pts[:2], fill=rgb, width=max(2, round(r * rng.uniform(0.08, 0.2))), joint="curve")
    else:
        _hand(draw, pts, (cx, cy), r, rgb, rng)


def _hand(draw, pts, centre, r, rgb, rng: random.Random) -> None:
    """A finger on a sketchpad: the outline resampled, wobbled by smooth noise, drawn with a varying width,
    its ends overshooting or falling short."""
    dense = _resample(pts, 64)
    phases = [rng.uniform(0, 2 * math.pi) for _ in range(3)]
    amp = rng.uniform(0.02, 0.07)
    n = len(dense)
    out = []
    for k, (x, y) in enumerate(dense):
        t = 2 * math.pi * k / n
        wob = 1 + amp * sum(math.sin((f + 1) * t + p) / (f + 1) for f, p in enumerate(phases))
        out.append((centre[0] + (x - centre[0]) * wob, centre[1] + (y - centre[1]) * wob))
    end = n + rng.randint(-3, 5)
    base = max(2.0, r * rng.uniform(0.06, 0.16))
    for k in range(end):
        a, b = out[k % n], out[(k + 1) % n]
        w = max(1, round(base * (1 + 0.35 * math.sin(3 * math.pi * k / n + phases[0]))))
        draw.line([a, b], fill=rgb, width=w)
        draw.ellipse((b[0] - w / 2, b[1] - w / 2, b[0] + w / 2, b[1] + w / 2), fill=rgb)


def _resample(pts, n: int) -> list[tuple[float, float]]:
    closed = np.array(pts + pts[:1], np.float64)  # (P + 1, 2)
    seg = np.linalg.norm(np.diff(closed, axis=0), axis=1)
    at = np.concatenate([[0.0], np.cumsum(seg)])
    want = np.linspace(0.0, at[-1], n, endpoint=False)
    return list(zip(np.interp(want, at, closed[:, 0]), np.interp(want, at, closed[:, 1])))


def _far(rgb, avoid, margin: float = MIN_CONTRAST) -> bool:
    return all(math.dist(rgb, a) >= margin for a in avoid)


def _colour(rng: random.Random, kind: str, avoid) -> tuple[int, int, int]:
    for _ in range(50):
        if kind == "light":
            rgb = tuple(rng.randint(200, 250) for _ in range(1)) * 3
            rgb = tuple(min(255, c + rng.randint(-6, 6)) for c in rgb)
        elif kind == "white":
            rgb = (rng.randint(250, 255),) * 3
        elif kind == "black":
            rgb = (rng.randint(0, 40),) * 3
        elif kind == "grey":
            rgb = shapes._sample_background(rng)[1]
        else:  # saturated, and the colours of gradients and textures
            import colorsys
            h, sat, v = rng.random(), rng.uniform(0.5, 1.0), rng.uniform(0.45, 1.0)
            rgb = tuple(round(255 * c) for c in colorsys.hsv_to_rgb(h, sat, v))
        if _far(rgb, avoid):
            return rgb
    return rgb


def background(kind: str, rng: random.Random, s: int, avoid=(), vary: bool = False, clutter: bool = False
               ) -> Image.Image:
    """An `s` x `s` RGB background of a kind; flat colours keep `MIN_CONTRAST` from every colour in `avoid`.

    `vary` (training) widens the two cluttered kinds beyond what the evaluation draws: photo crops are flipped,
    turned and recoloured (hue, saturation, brightness, contrast), and textures come in five more patterns, so
    the model learns "the object on top of clutter" rather than the few photos and patterns at hand. `clutter`
    (with `vary`, once `use_clutter` has given the pictures) makes a photo a collage of things (`_collage`)."""
    if kind in ("grey", "light", "white", "black", "saturated"):
        return Image.new("RGB", (s, s), _colour(rng, kind, avoid))
    if kind == "gradient":
        a, b = (np.array(_colour(rng, rng.choice(("saturated", "light", "black")), avoid), np.float32)
                for _ in range(2))
        ang = rng.uniform(0, 2 * math.pi)
        yy, xx = np.mgrid[0:s, 0:s].astype(np.float32) / s
        t = (xx * math.cos(ang) + yy * math.sin(ang))
        t = (t - t.min()) / max(1e-6, t.max() - t.min())
        return Image.fromarray((a + (b - a) * t[..., None]).astype(np.uint8), "RGB")
    if kind == "texture":
        return _texture(rng, s, avoid, vary)
    if kind == UNSEEN_TEXTURE:
        return _texture(rng, s, avoid, styles=UNSEEN_TEXTURES)
    if kind == UNSEEN_PHOTO:
        return _photo_crop(rng, s, unseen_photos() or photos())
    if clutter and vary and _CLUTTER:
        return _collage(rng, s)
    return _varied_photo(rng, s) if vary else _photo_crop(rng, s)


def _varied_photo(rng: random.Random, s: int) -> Image.Image:
    """A crop of any photo training may draw (`photos`, `more_photos`), recoloured (`_recolour`)."""
    return _recolour(_photo_crop(rng, s, photos() + more_photos()), rng)


_CLUTTER: list[np.ndarray] = []  # (N, S, S, 4) uint8 RGBA pictures for `_collage`; empty until `use_clutter`


def use_clutter(pictures: np.ndarray) -> None:
    """Give the pictures that clutter looks (`Look.clutter`) heap into a collage: training passes its own art
    styles' emoji, less those whose names say one of the shapes (a heart emoji behind "a blue circle" would lie)."""
    _CLUTTER[:] = [pictures] if len(pictures) else []


def _collage(rng: random.Random, s: int) -> Image.Image:
    """A "dead leaves" picture: things of many sizes (a quarter to 1.6 times the side, log-uniform) heaped on a
    varied photo crop or a flat colour, some turned, the whole maybe blurred (depth of field) and recoloured.
    Photos are scenes of occluding things at every scale; so is this, with far more things than the few photos."""
    pictures = _CLUTTER[0]
    base = (_varied_photo(rng, s) if rng.random() < 0.5
            else Image.new("RGB", (s, s), _colour(rng, rng.choice(("saturated", "light", "grey")), ())))
    for _ in range(rng.randint(3, 12)):
        side = max(4, round(s * math.exp(rng.uniform(math.log(0.25), math.log(1.6)))))
        sprite = Image.fromarray(pictures[rng.randrange(len(pictures))], "RGBA").resize(
            (side, side), Image.Resampling.BILINEAR)
        if rng.random() < 0.5:
            sprite = sprite.rotate(rng.uniform(0, 360), Image.Resampling.BILINEAR)
        base.paste(sprite, (rng.randint(-side // 2, s - side // 2), rng.randint(-side // 2, s - side // 2)), sprite)
    if rng.random() < 0.5:
        base = base.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 3.0)))
    return _recolour(base, rng) if rng.random() < 0.5 else base


TEXTURES = ("stripes", "checks", "grain")  # what the evaluation draws
MORE_TEXTURES = ("dots", "waves", "plaid", "noise", "rings")  # and what `vary` adds in training
UNSEEN_TEXTURES = ("bricks", "zigzag", "herringbone")  # and what only the evaluation's UNSEEN_TEXTURE row draws


def _texture(rng: random.Random, s: int, avoid, vary: bool = False, styles: tuple[str, ...] | None = None
             ) -> Image.Image:
    a = np.array(_colour(rng, rng.choice(("saturated", "light", "grey")), avoid), np.float32)
    b = a + np.array([rng.uniform(-50, 50)] * 3, np.float32)  # a lighter or darker shade: texture, not objects
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32)
    period = rng.uniform(s / 16, s / 5)
    style = rng.choice(styles or (TEXTURES + MORE_TEXTURES if vary else TEXTURES))
    if style in MORE_TEXTURES + UNSEEN_TEXTURES:
        t = _more_texture(style, rng, s, xx, yy, period)
    elif style == "stripes":
        ang = rng.uniform(0, math.pi)
        t = (np.sin((xx * math.cos(ang) + yy * math.sin(ang)) * 2 * math.pi / period) > 0).astype(np.float32)
    elif style == "checks":
        t = ((xx // period + yy // period) % 2).astype(np.float32)
    else:
        small = np.random.default_rng(rng.randrange(2**31)).random((8, 8)).astype(np.float32)
        t = np.asarray(Image.fromarray((small * 255).astype(np.uint8)).resize((s, s), Image.Resampling.BICUBIC),
                       np.float32) / 255
    return Image.fromarray(np.clip(a + (b - a) * t[..., None], 0, 255).astype(np.uint8), "RGB")


def _more_texture(style: str, rng: random.Random, s: int, xx, yy, period: float) -> np.ndarray:
    """`(s, s)` float32 in [0, 1]: one of `MORE_TEXTURES` or `UNSEEN_TEXTURES`."""
    if style == "dots":
        fx, fy = (xx % period) / period - 0.5, (yy % period) / period - 0.5
        return (np.hypot(fx, fy) < rng.uniform(0.15, 0.4)).astype(np.float32)
    if style == "waves":
        ang = rng.uniform(0, math.pi)
        u, v = xx * math.cos(ang) + yy * math.sin(ang), -xx * math.sin(ang) + yy * math.cos(ang)
        warp = rng.uniform(0.2, 1.0) * period * np.sin(v * 2 * math.pi / rng.uniform(s / 4, s))
        return 0.5 + 0.5 * np.sin((u + warp) * 2 * math.pi / period).astype(np.float32)
    if style == "plaid":
        p2 = rng.uniform(s / 16, s / 5)
        return (0.5 * (np.sin(xx * 2 * math.pi / period) > 0.3) + 0.5 * (np.sin(yy * 2 * math.pi / p2) > 0.3)
                ).astype(np.float32)
    if style == "noise":  # value noise over three octaves: clouds, paper, stone
        gen, t = np.random.default_rng(rng.randrange(2**31)), np.zeros((s, s), np.float32)
        for octave, weight in ((4, 0.5), (12, 0.3), (32, 0.2)):
            small = (gen.random((octave, octave)) * 255).astype(np.uint8)
            t += weight * np.asarray(Image.fromarray(small).resize((s, s), Image.Resampling.BICUBIC), np.float32) / 255
        return t
    if style == "bricks":  # courses of bricks, every other one shifted by half a brick, thin mortar lines
        row = yy // period
        shifted = xx + (row % 2) * period
        return (((yy % period) < period * 0.12) | ((shifted % (2 * period)) < period * 0.12)).astype(np.float32)
    if style == "zigzag":
        return ((yy + np.abs((xx % period) - period / 2)) % period < period / 2).astype(np.float32)
    if style == "herringbone":  # columns of diagonal stripes, leaning left and right in turn
        lean = np.where((xx // period) % 2 == 0, 1.0, -1.0)
        return (np.sin((xx + lean * yy) * 4 * math.pi / period) > 0).astype(np.float32)
    cx, cy = rng.uniform(-s, 2 * s), rng.uniform(-s, 2 * s)  # rings: wood grain, ripples
    return 0.5 + 0.5 * np.sin(np.hypot(xx - cx, yy - cy) * 2 * math.pi / period).astype(np.float32)


def _recolour(img: Image.Image, rng: random.Random) -> Image.Image:
    """A photo crop flipped or turned, its hue rotated and its saturation, brightness and contrast changed."""
    img = img.transpose(rng.choice(list(Image.Transpose)[:5])) if rng.random() < 0.7 else img
    hsv = np.asarray(img.convert("HSV"), np.float32)
    hsv[..., 0] = (hsv[..., 0] + rng.uniform(0, 256)) % 256
    hsv[..., 1] *= rng.uniform(0.3, 1.6)
    hsv[..., 2] = (hsv[..., 2] - 128) * rng.uniform(0.6, 1.3) + 128 + rng.uniform(-50, 50)
    return Image.fromarray(np.clip(hsv, 0, 255).astype(np.uint8), "HSV").convert("RGB")


@lru_cache(maxsize=1)
def photos() -> tuple[Image.Image, ...]:
    """The public-domain photos the project ships, plus scikit-image's sample photos where it is installed."""
    out = [Image.open(p).convert("RGB") for p in sorted(PHOTOS.glob("*.jpg"))]
    try:
        from skimage import data
        for name in ("brick", "grass", "gravel", "coffee", "chelsea", "rocket", "astronaut"):  # CC0 or public domain
            arr = getattr(data, name)()
            out.append(Image.fromarray(arr).convert("RGB"))
    except (ImportError, OSError, ValueError):  # optional, and its data may need a download it cannot make
        pass
    return tuple(out)


@lru_cache(maxsize=1)
def more_photos() -> tuple[Image.Image, ...]:
    """scikit-image's other public-domain pictures (coins, a clock, a page of text, the moon, cells...): only
    training's varied looks draw them, so the evaluation's photo row keeps its own few photos."""
    try:
        from skimage import data
        return tuple(Image.fromarray(getattr(data, name)()).convert("RGB") for name in
                     ("immunohistochemistry", "moon", "coins", "clock", "page", "text", "cell", "camera"))
    except (ImportError, OSError, ValueError):
        return ()


@lru_cache(maxsize=1)
def unseen_photos() -> tuple[Image.Image, ...]:
    """Photos that no training run draws, for the evaluation's `UNSEEN_PHOTO` row: the few Gradio ships as media
    for its demos (a cheetah, a lion, a tower, ...), read from the installed package, never copied or trained on."""
    import importlib.util
    spec = importlib.util.find_spec("gradio")
    if spec is None or spec.origin is None:
        return ()
    folder = Path(spec.origin).parent / "media_assets" / "images"
    return tuple(Image.open(p).convert("RGB") for p in sorted(folder.glob("*.jp*g")))


def _photo_crop(rng: random.Random, s: int, pool: tuple[Image.Image, ...] | None = None) -> Image.Image:
    img = rng.choice(pool or photos())
    side = round(min(img.size) * rng.uniform(0.3, 1.0))
    x, y = rng.randint(0, img.width - side), rng.randint(0, img.height - side)
    return img.crop((x, y, x + side, y + side)).resize((s, s), Image.Resampling.BILINEAR)


def degrade(img: Image.Image, rng: random.Random) -> Image.Image:
    """Some of: blur, sensor noise, JPEG at a low quality (what a photo of a screen or a paper goes through)."""
    if rng.random() < 0.5:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.2)))
    if rng.random() < 0.5:
        arr = np.asarray(img, np.float32)
        noise = np.random.default_rng(rng.randrange(2**31)).normal(0, rng.uniform(2, 10), arr.shape)
        img = Image.fromarray(np.clip(arr + noise, 0, 255).astype(np.uint8), "RGB")
    if rng.random() < 0.6:
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=rng.randint(25, 85))
        img = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    return img
