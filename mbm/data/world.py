"""The mixed world `mbm-world` learns from: widened shapes scenes beside emoji concepts named in 28 languages.

A batch is `shapes` items (scenes of `mbm.data.shapes` widened by `mbm.data.backgrounds`, captioned by
`mbm.data.language`, half of them in groups of minimal variants as `mbm.train.clip.make_batch` makes them)
and `emoji` items: distinct concepts (so no two captions in a batch name the same concept: they would be false
negatives), each drawn in one of the training art styles, pasted at a random size and place on a random
background, and named in a random locale by its label, sometimes with a few of its tags. One art style
(`HOLDOUT_STYLE`) never appears in training: evaluation on it tells a learned concept from a learned picture.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from mbm.data import backgrounds
from mbm.data import emoji as emoji_data

HOLDOUT_STYLE = "twemoji"
ENGLISH_SHARE = 0.3  # of emoji captions; the other 27 locales share the rest
# By default half the English captions say the label as people type it ("a dog", "a picture of a fox"): with bare
# labels only, "a dog" lies nearer the shapes' captions ("a red circle") than the dog, and a classroom types "a dog".
# (`mbm-world` as shipped was trained with bare labels: `--phrase-share 0` replays it.)
ENGLISH_PHRASES = ("{a} {}", "{a} {}", "the {}", "a picture of {a} {}", "{} emoji", "an emoji of {a} {}")


@dataclass
class EmojiSet:
    """Every concept drawn in every style, in memory: `images[style]` is `(N, S, S, 4)` uint8 RGBA."""
    images: dict[str, np.ndarray]
    concepts: list[dict]

    @classmethod
    def load(cls, cache: Path, size: int = 64) -> EmojiSet:
        images, concepts = emoji_data.load(cache, size)
        return cls(images, concepts)

    def styles(self, holdout: str = HOLDOUT_STYLE) -> list[str]:
        return [s for s in self.images if s != holdout]

    def locales(self) -> list[str]:
        return list(self.concepts[0]["names"]) if self.concepts else []


def phrased(template: str, label: str) -> str:
    """One of `ENGLISH_PHRASES` said of `label`, with the article its first letter takes ("an owl", "a fox")."""
    return template.replace("{a}", "an" if label[:1].lower() in "aeiou" else "a").replace("{}", label)


def caption(concept: dict, rng: random.Random, locale: str | None = None, phrase_share: float = 0.5,
            locale_weights: dict[str, float] | None = None) -> str:
    """A concept's name in a random (or given) locale: its label, a third of the time with up to 3 tags.
    `locale_weights` (locale -> weight, 1 where absent) makes some of the non-English locales likelier."""
    if locale is None:
        others = [loc for loc in concept["names"] if loc != "en"]
        if rng.random() < ENGLISH_SHARE or not others:
            locale = "en"
        elif locale_weights:  # without weights rng.choice: the streams of earlier runs stay as they were
            locale = rng.choices(others, [locale_weights.get(loc, 1.0) for loc in others])[0]
        else:
            locale = rng.choice(others)
    label, *tags = concept["names"][locale]
    tags = [t for t in tags if t.lower() != label.lower()]
    if tags and rng.random() < 1 / 3:
        return f"{label}: " + ", ".join(rng.sample(tags, min(len(tags), rng.randint(1, 3))))
    if locale == "en" and phrase_share > 0 and rng.random() < phrase_share:
        return phrased(rng.choice(ENGLISH_PHRASES), label)
    return label


def paste(rgba: np.ndarray, size: int, rng: random.Random, kind: str | None = None,
          scale: tuple[float, float] = (0.55, 1.0), degrade: bool | None = None) -> Image.Image:
    """An emoji on a background of a random (or given) kind, at a random size and place, maybe degraded."""
    kind = kind or rng.choices(backgrounds.KINDS + ("white",), weights=(1, 1, 1, 1, 1, 1, 1, 1, 4))[0]
    img = backgrounds.background(kind, rng, size).convert("RGBA")
    side = max(8, round(size * rng.uniform(*scale)))
    sprite = Image.fromarray(rgba, "RGBA").resize((side, side), Image.Resampling.BILINEAR)
    if rng.random() < 0.3:
        sprite = sprite.rotate(rng.uniform(-15, 15), Image.Resampling.BILINEAR)
    img.alpha_composite(sprite, (rng.randint(0, size - side), rng.randint(0, size - side)))
    img = img.convert("RGB")
    if degrade if degrade is not None else rng.random() < 0.3:
        img = backgrounds.degrade(img, rng)
    return img


def emoji_items(data: EmojiSet, n: int, size: int, rng: random.Random, styles: list[str],
                phrase_share: float = 0.5, locale_weights: dict[str, float] | None = None) -> tuple[list, list[str]]:
    """`n` distinct concepts, each in a random training style: (images, captions)."""
    picks = rng.sample(range(len(data.concepts)), min(n, len(data.concepts)))
    images = [paste(data.images[rng.choice(styles)][i], size, rng) for i in picks]
    return images, [caption(data.concepts[i], rng, phrase_share=phrase_share, locale_weights=locale_weights)
                    for i in picks]


def shapes_items(n: int, size: int, rng: random.Random, group_fraction: float = 0.5, group_size: int = 4,
                 kind_weights: dict[str, float] | None = None, vary_share: float = 0.0,
                 clutter_share: float = 0.0, hard_share: float = 0.0) -> tuple[list, list[str], list]:
    """`n` widened shapes scenes as (images, captions, scenes); grouped minimal variants share one look,
    `kind_weights`, `vary_share` and `clutter_share` shape the looks (`backgrounds.sample_look`), and `hard_share`
    of the shape groups hold the nearest shape (`make_batch`)."""
    from mbm.data.shapes import make_scene
    from mbm.train.clip import make_batch

    def new_scene(r: random.Random):
        return backgrounds.widen(make_scene("train", r.randrange(2**40)), r, kind_weights=kind_weights,
                                 vary_share=vary_share, clutter_share=clutter_share)
    scenes, texts = make_batch(rng, n, group_fraction, group_size, new_scene=new_scene, hard_share=hard_share)
    return [backgrounds.render(s, size) for s in scenes], texts, scenes


def clutter_pictures(data: EmojiSet, styles: list[str]) -> np.ndarray:
    """`(N, S, S, 4)`: every concept in the given (training) styles whose English name and tags say none of the
    shapes' words ("red heart", "star-struck", "cross mark" are left out), for `backgrounds.use_clutter`."""
    import re

    from mbm.data.shapes import SHAPES
    says_shape = re.compile(r"\b(" + "|".join(SHAPES) + r")s?\b")
    keep = [i for i, c in enumerate(data.concepts) if not says_shape.search(" ".join(c["names"]["en"]).lower())]
    return np.concatenate([data.images[style][keep] for style in styles]) if keep and styles else np.zeros((0,))


def to_array(images: list[Image.Image]) -> np.ndarray:
    """`(B, H, W, 3)` uint8."""
    return np.stack([np.asarray(im.convert("RGB")) for im in images])
