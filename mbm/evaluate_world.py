"""How good is an encoder on the world people bring: emoji concepts in an unseen art style, and shapes anywhere.

`emoji_report` ranks every concept's picture (one art style, on white) against every concept's label:
text->image R@1/R@10 with the English label and per locale, image->text R@1, and R@10 per emoji group.
`robustness_report` classifies single widened shapes zero-shot, jointly ("a red circle" among all 80
colour-shape names) and by shape alone, per background kind, size range, drawing style and with degradation.
`mbm.evaluate.evaluate` keeps measuring the shapes retrieval splits; `world_report` runs all three.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np

from mbm.classify import prototypes
from mbm.data import backgrounds, world
from mbm.data.language import SHAPE_TEMPLATES, fix_articles
from mbm.data.shapes import COLOURS, SHAPES, make_scene
from mbm.evaluate import evaluate, recall_at
from mbm.models import Encoder

SIZE_RANGES = {"10-30%": (0.1, 0.3), "30-60%": (0.3, 0.6), "60-90%": (0.6, 0.9)}
JOINT = [fix_articles(f"{c} {s}") for c in COLOURS for s in SHAPES]


def emoji_gallery(data: world.EmojiSet, style: str, size: int) -> list:
    """Every concept in one style, on white, 90% of the side: the pictures a gallery would hold."""
    rng = random.Random(f"emoji-gallery/{style}")
    return [world.paste(data.images[style][i], size, rng, kind="white", scale=(0.9, 0.9), degrade=False)
            for i in range(len(data.concepts))]


def emoji_report(encoder: Encoder, data: world.EmojiSet, style: str) -> dict:
    """Retrieval over every concept drawn in `style` (see the module docstring)."""
    img = encoder.encode_images(emoji_gallery(data, style, encoder.image_size))  # (N, D)
    n = len(data.concepts)
    same = np.eye(n, dtype=bool)
    out: dict = {"style": style, "concepts": n, "per_locale": {}}
    for locale in data.locales():
        txt = encoder.encode_texts([c["names"][locale][0] for c in data.concepts])  # (N, D)
        r = recall_at(txt @ img.T, same, ks=(1, 10))
        out["per_locale"][locale] = {"t2i_r1": r[1], "t2i_r10": r[10]}
        if locale == "en":
            out["i2t_r1"] = recall_at(img @ txt.T, same, ks=(1,))[1]
            hits = _hits_at(txt @ img.T, 10)
            groups = np.array([c["group"] for c in data.concepts])
            out["per_group_r10"] = {g: float(hits[groups == g].mean()) for g in sorted(set(groups))}
    out["t2i_r1"] = out["per_locale"]["en"]["t2i_r1"]
    out["t2i_r10"] = out["per_locale"]["en"]["t2i_r10"]
    others = [v["t2i_r10"] for k, v in out["per_locale"].items() if k != "en"]
    out["t2i_r10_other_locales"] = float(np.mean(others)) if others else 0.0
    return out


def _hits_at(sims: np.ndarray, k: int) -> np.ndarray:
    top = np.argsort(-sims, axis=1, kind="stable")[:, :k]  # (N, k)
    return (top == np.arange(len(sims))[:, None]).any(axis=1)


def _shape_scenes(n: int, seed: str, kind=None, drawing=None, degrade=False, diameter=None) -> list:
    rng = random.Random(seed)
    out, i = [], 0
    while len(out) < n:
        scene, i = make_scene("test", 40_000 + i, n_objects=1), i + 1
        if kind and not backgrounds.fits(kind, [scene.objects[0].rgb]):
            continue  # a white shape on white is not a question anyone asks
        d = rng.uniform(*diameter) if diameter else None
        look = backgrounds.sample_look(rng, kind=kind, drawing=drawing or "filled", degrade=degrade)
        out.append(backgrounds.widen(scene, rng, look, diameter=d))
    return out


def zero_shot_shapes(encoder: Encoder, scenes: list, protos: dict[str, np.ndarray]) -> dict[str, float]:
    """Joint colour+shape accuracy among all 80 names, and shape accuracy among the 8 shapes."""
    img = encoder.encode_images([backgrounds.render(s, encoder.image_size) for s in scenes])  # (N, D)
    objs = [s.objects[0] for s in scenes]
    joint = np.array([JOINT.index(fix_articles(f"{o.colour} {o.shape}")) for o in objs])
    shape = np.array([SHAPES.index(o.shape) for o in objs])
    return {"joint": float(((img @ protos["joint"].T).argmax(1) == joint).mean()),
            "shape": float(((img @ protos["shape"].T).argmax(1) == shape).mean())}


def robustness_report(encoder: Encoder, n: int = 200) -> dict[str, dict[str, float]]:
    """Zero-shot on single widened shapes: per background kind (filled, not degraded), per size range, per
    drawing style, and degraded (JPEG, blur, noise); `n` scenes per row."""
    protos = {"joint": prototypes(encoder, JOINT, SHAPE_TEMPLATES),
              "shape": prototypes(encoder, list(SHAPES), SHAPE_TEMPLATES)}
    rows = {f"background {k}": dict(kind=k) for k in backgrounds.KINDS}
    rows[f"background {backgrounds.UNSEEN_TEXTURE}"] = dict(kind=backgrounds.UNSEEN_TEXTURE)  # patterns never drawn
    if backgrounds.unseen_photos():  # photos no training run drew: how far the photo row generalises
        rows[f"background {backgrounds.UNSEEN_PHOTO}"] = dict(kind=backgrounds.UNSEEN_PHOTO)
    rows |= {f"size {name}": dict(diameter=r) for name, r in SIZE_RANGES.items()}
    rows |= {f"drawing {d}": dict(drawing=d) for d in backgrounds.DRAWINGS}
    rows["degraded"] = dict(degrade=True)
    return {name: zero_shot_shapes(encoder, _shape_scenes(n, f"robust/{name}", **kw), protos)
            for name, kw in rows.items()}


def world_report(encoder: Encoder, cache: Path, holdout_style: str = world.HOLDOUT_STYLE, n_pairs: int = 1000,
                 n_zero_shot: int = 500, n_robust: int = 200) -> dict:
    """Everything the model card of `mbm-world` shows: emoji (held-out style and a training style), shapes
    robustness, and the shapes retrieval splits of `mbm.evaluate`."""
    data = world.EmojiSet.load(cache, encoder.image_size)
    train_style = data.styles(holdout_style)[0]
    return {"emoji_holdout": emoji_report(encoder, data, holdout_style),
            "emoji_train": emoji_report(encoder, data, train_style),
            "robustness": robustness_report(encoder, n_robust),
            "shapes": evaluate(encoder, n_pairs=n_pairs, n_zero_shot=n_zero_shot)}
