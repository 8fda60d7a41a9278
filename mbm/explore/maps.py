"""The embedding map: a gallery's images and captions projected to 2-D together, with a query and its hits.

PCA always, UMAP when `umap-learn` is installed; one fit per gallery (cached), so another query is one projection.
The map also measures the modality gap: how much closer an image sits to its own caption than to another's,
and how far apart the image cloud and the caption cloud are.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mbm.errors import InputError
from mbm.explore import _cache

if TYPE_CHECKING:
    from mbm.gallery import Gallery

log = logging.getLogger(__name__)
METHODS = ("pca", "umap")
MAP_MAX_ITEMS = 1000  # points a page can draw and hover smoothly: 2,000 (images + captions) and 1,000 thumbnails


@dataclass(frozen=True)
class MapPoint:
    x: float
    y: float
    kind: str  # "image" | "caption"
    id: int  # the gallery item it belongs to (an image and its caption share it)
    caption: str  # the item's caption (for hover)
    thumbnail: Path | None  # images only
    rank: int | None = None  # 1-based place among the query's hits; None when not a hit (and for captions)


@dataclass(frozen=True)
class ModalityGap:
    matched: float  # mean cosine of each image with its own caption
    random: float  # mean cosine of each image with another item's caption (a fixed derangement)
    centroid_distance: float  # L2 distance between the mean image vector and the mean caption vector
    n: int  # image-caption pairs measured


@dataclass
class EmbeddingMap:
    points: list[MapPoint]  # every image, then every caption (of a fixed sample, hits included, in big galleries)
    query: tuple[float, float] | None  # where the query lands; None without a query
    hits: list[int]  # item ids of the query's hits, best first
    method: str  # "pca" | "umap"
    explained: tuple[float, float] | None  # variance ratio of each PCA axis; None for UMAP
    gap: ModalityGap
    items: int = 0  # items in the gallery (fitted and measured), of which `points` shows a sample when it is more


@dataclass
class _Fit:
    project: Callable[[np.ndarray], np.ndarray]  # (Q, D) -> (Q, 2)
    points: list[MapPoint]
    explained: tuple[float, float] | None
    gap: ModalityGap


def available_methods() -> list[str]:
    """The projections installed here: always "pca"; "umap" with `umap-learn`."""
    try:
        import umap  # noqa: F401
    except ImportError:
        return ["pca"]
    return ["pca", "umap"]


def pca_2d(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`(mean (D,), components (2, D), explained variance ratio (2,))` of the rows of `x`.

    The components are the top right singular vectors of the centred rows, found as the top eigenvectors
    of their `(D, D)` scatter matrix: the same axes as an SVD, at a cost that grows with N only through one
    matrix product (a LAPACK SVD of 614 x 128 took 2.5 s on a busy 2-core machine, this 0.2 s). Each
    axis's sign is fixed (its largest loading positive), so the map does not flip between fits."""
    x = np.asarray(x, np.float64)
    mean = x.mean(axis=0)
    centred = x - mean
    var, vecs = np.linalg.eigh(centred.T @ centred)  # ascending eigenvalues of the (D, D) scatter
    top = np.argsort(var)[::-1][:2]
    comps = np.zeros((2, x.shape[1]))
    comps[:len(top)] = vecs[:, top].T
    comps *= np.where(comps[np.arange(2), np.abs(comps).argmax(axis=1)] < 0, -1.0, 1.0)[:, None]
    ratio = np.zeros(2)
    total = float(np.clip(var, 0, None).sum())
    ratio[:len(top)] = np.clip(var[top], 0, None) / total if total > 0 else 0.0
    return mean, comps, ratio


def modality_gap(image_ids: np.ndarray, images: np.ndarray, caption_ids: np.ndarray, captions: np.ndarray,
                 seed: int = 0) -> ModalityGap:
    """How far apart the two modalities sit: matched vs random pair cosine and the clouds' distance."""
    _, i, c = np.intersect1d(np.asarray(image_ids), np.asarray(caption_ids), return_indices=True)
    img, cap, n = images[i], captions[c], len(i)  # (n, D) each, row j of one matches row j of the other
    order = np.random.default_rng(seed).permutation(n)
    other = np.empty(n, np.int64)
    other[order] = np.roll(order, -1)  # one cycle through a shuffled order: nobody gets their own caption
    return ModalityGap(matched=float((img * cap).sum(1).mean()) if n else float("nan"),
                       random=float((img * cap[other]).sum(1).mean()) if n > 1 else float("nan"),
                       centroid_distance=float(np.linalg.norm(images.mean(0) - captions.mean(0)))
                       if len(images) and len(captions) else float("nan"), n=n)


def embedding_map(gallery: Gallery, query_vec: np.ndarray | None = None, hit_ids=(),
                  method: str = "pca", max_items: int = MAP_MAX_ITEMS) -> EmbeddingMap:
    """The gallery's images and captions in one 2-D map, with an optional query point and its hits.

    Args:
        gallery: whose stored embeddings to map (no re-encoding).
        query_vec: a `(D,)` query embedding to place on the map (projected with the same fit).
        hit_ids: item ids of the query's hits, best first; their image points get a `rank`.
        method: "pca" (see `pca_2d`) or "umap" (needs `pip install umap-learn`; the first fit takes seconds).
        max_items: items whose points are returned (a fixed sample, plus every hit) when the gallery is bigger;
            the fit and the gap always use every item.
    """
    fit = _cache.cached(gallery, f"map:{_check_method(method)}", lambda: _fit_map(gallery, method))
    ranks = {int(i): r for r, i in enumerate(hit_ids, 1)}
    every = sorted({p.id for p in fit.points})
    shown = _sample_ids(every, max_items) | set(ranks)
    points = [replace(p, rank=ranks[p.id]) if p.kind == "image" and p.id in ranks else p
              for p in fit.points if p.id in shown]
    query = None
    if query_vec is not None:
        x, y = fit.project(np.asarray(query_vec, np.float32).reshape(1, -1))[0]
        query = (float(x), float(y))
    return EmbeddingMap(points, query, list(ranks), method, fit.explained, fit.gap, len(every))


def _sample_ids(ids: list[int], n: int) -> set[int]:
    """All of `ids` if there are at most `n`, else a fixed random `n` of them (the same for every query)."""
    if len(ids) <= n:
        return set(ids)
    return set(np.random.default_rng(0).choice(ids, size=n, replace=False).tolist())


def _check_method(method: str) -> str:
    if method not in METHODS:
        raise InputError(f"unknown projection {method!r}; choose from {available_methods()}")
    if method not in available_methods():
        raise InputError("the UMAP projection needs umap-learn: pip install umap-learn (or use 'pca')")
    return method


def _fit_map(gallery: Gallery, method: str) -> _Fit:
    ids, images = gallery.image_matrix()
    cids, texts, captions = gallery.captions()
    if not len(ids):
        raise InputError("this gallery has no searchable images to map: add some images first")
    joint = np.vstack([images, captions])  # (N + C, D): one fit, so both clouds share the axes
    if method == "pca":
        mean, comps, ratio = pca_2d(joint)
        project, explained = (lambda q: (q - mean) @ comps.T), (float(ratio[0]), float(ratio[1]))
        xy = project(joint)
    else:
        import umap
        reducer = umap.UMAP(n_components=2, random_state=0)
        xy, project, explained = reducer.fit_transform(joint), reducer.transform, None
    items = {it.id: it for it in gallery.items(ids)}
    points = [MapPoint(float(x), float(y), "image", int(i), items[i].caption if i in items else "",
                       gallery.thumbnail(items[i]) if i in items else None) for (x, y), i in zip(xy, ids.tolist())]
    points += [MapPoint(float(x), float(y), "caption", int(i), text, None)
               for (x, y), i, text in zip(xy[len(ids):], cids, texts)]
    log.info("fitted a %s map of %d images and %d captions", method, len(ids), len(cids))
    return _Fit(project, points, explained, modality_gap(ids, images, np.array(cids, np.int64), captions))
