"""How good is an encoder on the shapes world: retrieval recall and zero-shot accuracy.

Retrieval ranks `n` scenes against their canonical captions (`describe`) both ways; a hit is any
image whose caption equals the query's (two scenes can share a caption when both hold one
object in the same cell). Zero-shot classifies single-object scenes by colour and by shape with
the prompt templates that `mbm.data.language` defines.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mbm.classify import neighbour_vote, probabilities, prototypes
from mbm.data.language import COLOUR_TEMPLATES, SHAPE_TEMPLATES, describe
from mbm.data.shapes import COLOURS, SHAPES, make_scene, render
from mbm.models import Encoder


def recall_at(sims: np.ndarray, same: np.ndarray, ks=(1, 5)) -> dict[int, float]:
    """Recall@k for a `(Q, N)` similarity matrix; `same[q, n]` marks every correct answer."""
    order = np.argsort(-sims, axis=1, kind="stable")
    hits = np.take_along_axis(same, order, axis=1)  # (Q, N) correctness in rank order
    return {k: float(hits[:, :k].any(axis=1).mean()) for k in ks}


def caption_pairs(split: str = "test", n: int = 1000) -> tuple[list, list[str]]:
    """Scenes `0..n-1` of a split and their canonical captions: the pairs `retrieval` ranks."""
    scenes = [make_scene(split, i) for i in range(n)]
    return scenes, [describe(s) for s in scenes]


def pair_recall(img: np.ndarray, txt: np.ndarray, texts: list[str]) -> dict[str, float]:
    """Text->image and image->text R@1/R@5 of `(N, D)` image and caption embeddings of N pairs; any image
    whose caption equals the query's counts as a hit."""
    same = np.array(texts)[:, None] == np.array(texts)[None, :]  # (N, N), symmetric
    t2i, i2t = recall_at(txt @ img.T, same), recall_at(img @ txt.T, same)
    return {"t2i_r1": t2i[1], "t2i_r5": t2i[5], "i2t_r1": i2t[1], "i2t_r5": i2t[5]}


def retrieval(encoder: Encoder, split: str = "test", n: int = 1000, size: int = 0) -> dict[str, float]:
    """Text->image and image->text R@1/R@5 over `n` scenes of a split."""
    size = size or encoder.image_size
    scenes, texts = caption_pairs(split, n)
    img = encoder.encode_images([render(s, size) for s in scenes])
    return pair_recall(img, encoder.encode_texts(texts), texts)


def zero_shot(encoder: Encoder, split: str = "test", n: int = 500, size: int = 0) -> dict[str, float]:
    """Accuracy of zero-shot colour and shape classification on single-object scenes."""
    size = size or encoder.image_size
    scenes = [make_scene(split, 10_000_000 + i, n_objects=1) for i in range(n)]
    img = encoder.encode_images([render(s, size) for s in scenes])
    out = {}
    tasks = (("colour", list(COLOURS), COLOUR_TEMPLATES), ("shape", list(SHAPES), SHAPE_TEMPLATES))
    for attr, labels, templates in tasks:
        pred = (img @ prototypes(encoder, labels, templates).T).argmax(axis=1)
        truth = np.array([labels.index(getattr(s.objects[0], attr)) for s in scenes])
        out[f"zs_{attr}"] = float((pred == truth).mean())
    return out


def evaluate(encoder: Encoder, n_pairs: int = 1000, n_zero_shot: int = 500) -> dict[str, dict[str, float]]:
    """The full report: retrieval and zero-shot on the i.i.d. test split and on held-out combinations."""
    return {split: {**retrieval(encoder, split, n_pairs), **zero_shot(encoder, split, n_zero_shot)}
            for split in ("test", "heldout")}


def late_fusion_study(engine, folder: Path, per_class: int = 20, n_queries: int = 300, k: int = 10,
                      alphas: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0), split: str = "heldout") -> dict:
    """Zero-shot vs k-NN vote vs their blend, on single-object scenes labelled by shape.

    A labelled gallery of `per_class` `val` scenes per shape is written to `folder/<shape>/` (the
    folder-name convention of `Gallery.labels`); queries are single-object scenes of `split`.
    Returns `{alpha: accuracy}` (alpha 1 is pure zero-shot, 0 pure k-NN) and the sizes used.
    """
    made = {s: 0 for s in SHAPES}
    i = 0
    while min(made.values()) < per_class:
        scene = make_scene("val", 10_000 + i, n_objects=1)
        shape = scene.objects[0].shape
        if made[shape] < per_class:
            (folder / shape).mkdir(parents=True, exist_ok=True)
            render(scene, size=64).save(folder / shape / f"{i}.png")
            made[shape] += 1
        i += 1
    gallery, _ = engine.open_gallery(folder, activate=False)
    known = gallery.labels()
    ids, vecs = gallery.image_matrix()
    neighbours = np.array([known[i] for i in ids.tolist()])
    enc = engine.encoder
    scenes = [make_scene(split, 20_000 + q, n_objects=1) for q in range(n_queries)]
    truth = np.array([SHAPES.index(s.objects[0].shape) for s in scenes])
    queries = enc.encode_images([render(s, size=64) for s in scenes])  # (Q, D)
    zs = probabilities(enc, queries, prototypes(enc, list(SHAPES), SHAPE_TEMPLATES))  # (Q, L)
    sims = queries @ vecs.T  # (Q, N)
    top = np.argsort(-sims, axis=1)[:, :k]  # (Q, k)
    vote = np.stack([neighbour_vote(sims[q, top[q]], neighbours[top[q]].tolist(), list(SHAPES))
                     for q in range(n_queries)])  # (Q, L)
    accuracy = {a: float(((a * zs + (1 - a) * vote).argmax(1) == truth).mean()) for a in alphas}
    return {"accuracy": accuracy, "gallery": len(gallery), "queries": n_queries, "k": k, "split": split}
