"""Explore: the numbers behind the page's "Explore" tab, computed here so the page only draws them.

Four views of one model and one gallery, each a function returning a plain dataclass:
- `embedding_map`: images and their captions projected to 2-D together (PCA, or UMAP if installed), with a
  query and its hits, and the modality gap (matched vs random pairs, distance between the two clouds);
- `similarity_matrix`: N images x their N captions, cosine and softmax, the CLIP paper's figure;
- `compare_indexes`: one query on the exact index and on an approximate one (IVF or HNSW) with its knob;
- `prompt_lab`: zero-shot per template and for the averaged prototypes, with the tokens each prompt became.
The fifth, the stage-by-stage walk through the pipeline, is `mbm.trace`.
Fitted projections and approximate indexes are cached per (store, generation, model, method), so redrawing
with another query costs one projection or one search, not a refit.
"""

from __future__ import annotations

import logging
import statistics
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from mbm.classify import clean_labels, prompts, zero_shot
from mbm.errors import InputError
from mbm.index import HNSW_EF_SEARCH, Index
from mbm.models import Encoder

if TYPE_CHECKING:
    from mbm.gallery import Gallery

log = logging.getLogger(__name__)
METHODS = ("pca", "umap")
INDEX_KINDS = {"ivf": "nprobe", "hnsw": "efSearch"}  # kind -> the name of its speed/recall knob
MAP_MAX_ITEMS = 1000  # points a page can draw and hover smoothly: 2,000 (images + captions) and 1,000 thumbnails
HNSW_M = 8  # few links per node, so a small efSearch visibly loses recall even on a gallery of hundreds
MIN_PAIRS, MAX_PAIRS = 2, 32  # the similarity matrix's N: fewer says nothing, more is unreadable


class _Cache:
    """A small thread-safe LRU of fitted things. A missing entry is computed once, under its own lock, so a
    slow fit (UMAP) holds up only the callers waiting for that same entry."""

    def __init__(self, size: int = 16):
        self._items: OrderedDict = OrderedDict()
        self._pending: dict[tuple, threading.Lock] = {}
        self._size, self._lock = size, threading.Lock()

    def get(self, key: tuple, make: Callable[[], object]):
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            pending = self._pending.setdefault(key, threading.Lock())
        with pending:  # whoever comes first computes; the others wait here and then find it
            with self._lock:
                if key in self._items:
                    return self._items[key]
            try:
                value = make()
            except BaseException:
                with self._lock:
                    self._pending.pop(key, None)
                raise
            with self._lock:
                self._items[key] = value
                self._pending.pop(key, None)
                while len(self._items) > self._size:
                    self._items.popitem(last=False)
            return value


_CACHE = _Cache(size=8)


def _key(gallery: Gallery, what: str) -> tuple:
    return str(gallery.store), gallery.generation(), gallery.encoder.key, what


def _whole(value, lo: int, hi: int, message: str) -> int:
    """`value` as an int in lo..hi (a slider's 4.0 is 4), else ValueError(message)."""
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not lo <= value <= hi:
        raise InputError(message)
    return int(value)


# ---------------------------------------------------------------- 1. the embedding map
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
    fit = _CACHE.get(_key(gallery, f"map:{_check_method(method)}"), lambda: _fit_map(gallery, method))
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


# ---------------------------------------------------------------- 2. the similarity matrix
@dataclass
class SimilarityMatrix:
    images: list[int]  # item ids of the sampled images (rows), in order
    thumbnails: list[Path | None]  # one per row
    captions: list[str]  # the same items' captions (columns): pair i sits at [i, i]
    cosine: np.ndarray  # (n, n) cosine of image row i with caption column j
    probs: np.ndarray  # (n, n) softmax over each row of logit_scale * cosine: image -> which caption
    logit_scale: float  # the model's learned 1/temperature
    diagonal_hits: int  # rows whose best caption is their own
    softmax: bool  # whether the page asked to show `probs` rather than `cosine`


def similarity_matrix(gallery: Gallery, n: int = 8, seed: int = 0, softmax: bool = False) -> SimilarityMatrix:
    """`n` images with distinct captions (sampled by `seed`) against those captions, from stored vectors.

    Raises:
        ValueError: `n` outside 2..32, or a gallery with fewer than two distinct captions.
    """
    n = _whole(n, MIN_PAIRS, MAX_PAIRS, f"pick between {MIN_PAIRS} and {MAX_PAIRS} images for the matrix, got {n!r}")
    ids, images = gallery.image_matrix()
    cids, texts, captions = gallery.captions()
    row = {int(i): r for r, i in enumerate(ids.tolist())}
    first = {}  # caption -> (image row, caption row) of its first item: duplicate captions would tie
    for c, (i, text) in enumerate(zip(cids, texts)):
        if i in row and text.strip():
            first.setdefault(text, (row[i], c))
    if len(first) < MIN_PAIRS:
        raise InputError("this gallery has no captions to pair with its images (it needs at least two different "
                         "ones): give images a NAME.txt beside them, or readable file names")
    candidates = list(first.values())
    pairs = [candidates[p] for p in np.random.default_rng(seed).choice(len(candidates), min(n, len(candidates)),
                                                                       replace=False)]
    cosine = images[[r for r, _ in pairs]] @ captions[[c for _, c in pairs]].T  # (n, n)
    scale = gallery.encoder.logit_scale
    logits = scale * cosine
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    chosen = [int(ids[r]) for r, _ in pairs]
    items = {it.id: it for it in gallery.items(chosen)}
    return SimilarityMatrix(chosen, [gallery.thumbnail(items[i]) if i in items else None for i in chosen],
                            [texts[c] for _, c in pairs], cosine, probs, scale,
                            int((cosine.argmax(axis=1) == np.arange(len(pairs))).sum()), bool(softmax))


# ---------------------------------------------------------------- 3. exact vs approximate search
@dataclass
class IndexComparison:
    exact: list[tuple[int, float]]  # (item id, cosine), best first, from an exhaustive scan
    approx: list[tuple[int, float]]  # the same from the approximate index
    overlap: int  # ids in both lists
    recall: float  # overlap / len(exact): the share of the true top-k the approximate index found
    exact_ms: float  # median time of one search, milliseconds
    approx_ms: float
    factory: str  # the approximate index, as a FAISS factory string
    knob_name: str  # "nprobe" (IVF: lists scanned) | "efSearch" (HNSW: candidates kept)
    knob: int
    knob_max: int  # the largest useful knob: every list for IVF, the whole gallery for HNSW
    captions: dict[int, str]  # of every id in either list
    thumbnails: dict[int, Path | None]


def approximate_index(kind: str, n: int) -> tuple[str, int]:
    """`(factory, knob_max)` of the approximate index for `n` vectors: IVF with about sqrt(n) lists (a power
    of two; nprobe up to all of them, which scans everything), or HNSW with M=8 (efSearch up to n, capped)."""
    if kind not in INDEX_KINDS:
        raise InputError(f"unknown index kind {kind!r}; choose from {list(INDEX_KINDS)}")
    if kind == "hnsw":
        return f"HNSW{HNSW_M},Flat", max(1, min(n, HNSW_EF_SEARCH))
    nlist = int(min(2 ** round(np.log2(max(1.0, np.sqrt(n)))), max(1, n)))  # 16 for ~300 vectors
    return f"IVF{nlist},Flat", nlist


def compare_indexes(gallery: Gallery, query_vec: np.ndarray, k: int = 10, kind: str = "ivf", knob: int = 1,
                    repeats: int = 20) -> IndexComparison:
    """One query on the exact index and on an approximate one, with the approximate index's knob set.

    For IVF the knob is nprobe: how many of the lists nearest the query are scanned (all of them: exact).
    For HNSW it is efSearch: how far the walk over the graph goes. FAISS sizes its queue of candidates
    max(efSearch, k) but stops the walk once efSearch candidates beat the one it is expanding, so values
    below k still search less (built-in gallery, "a small green square at the top left", k=10: recall 0.2
    at efSearch 1, 0.6 at 5, 1.0 at 11). Times are the median of `repeats` searches; on a few hundred
    images both take microseconds, and the lesson is in the recall.

    Raises:
        ValueError: an unknown kind, a knob outside 1..knob_max, k < 1, or an empty gallery.
    """
    ids, vecs = gallery.image_matrix()
    factory, top = approximate_index(kind, len(ids))
    if not len(ids):
        raise InputError("this gallery has no searchable images to search")
    k = _whole(k, 1, 10**6, f"k must be a whole number of at least 1, got {k!r}")
    knob = _whole(knob, 1, top, f"{INDEX_KINDS[kind]} must be a whole number from 1 to {top} here, got {knob!r}")
    exact = gallery.index
    if not exact.exact:  # the gallery serves an approximate index itself: compare with a scan
        exact = _CACHE.get(_key(gallery, "index:Flat"), lambda: Index.build(vecs, ids, "Flat"))
    approx, lock = _CACHE.get(_key(gallery, f"index:{factory}"),
                              lambda: (Index.build(vecs, ids, factory), threading.Lock()))
    with lock:  # the knob lives on the shared index: set it and search as one step
        approx.set_search_params(**{"nprobe" if kind == "ivf" else "ef_search": knob})
        approx_hits, approx_ms = _timed(approx, query_vec, k, repeats)
    exact_hits, exact_ms = _timed(exact, query_vec, k, repeats)
    overlap = len({i for i, _ in exact_hits} & {i for i, _ in approx_hits})
    items = {it.id: it for it in gallery.items(list({i for i, _ in exact_hits + approx_hits}))}
    return IndexComparison(exact_hits, approx_hits, overlap, overlap / max(1, len(exact_hits)), exact_ms, approx_ms,
                           factory, INDEX_KINDS[kind], knob, top, {i: it.caption for i, it in items.items()},
                           {i: gallery.thumbnail(it) for i, it in items.items()})


def _timed(index: Index, query_vec: np.ndarray, k: int, repeats: int) -> tuple[list[tuple[int, float]], float]:
    times = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        scores, ids = index.search(query_vec, k)
        times.append(time.perf_counter() - start)
    hits = [(int(i), float(s)) for s, i in zip(scores[0], ids[0]) if i >= 0]
    return hits, 1000 * statistics.median(times)


# ---------------------------------------------------------------- 4. the prompt lab
@dataclass
class PromptInfo:
    text: str  # the prompt, label filled in
    tokens: list[str]  # what the model sees (see `Encoder.tokens`), cut at the context length
    n_tokens: int | None  # tokens the whole prompt takes, markers included (None if the tokenizer cannot say)
    truncated: bool  # n_tokens > context_length: the model saw it cut short


@dataclass
class PromptLab:
    labels: list[str]  # cleaned, in the columns' order
    templates: list[str]  # cleaned, in the rows' order
    table: np.ndarray  # (T, L) probabilities from each template alone; each row sums to 1
    ensemble: np.ndarray  # (L,) probabilities from the averaged prototypes (what `zero_shot` answers)
    prompts: list[list[PromptInfo]]  # [template][label]
    context_length: int
    truncated: list[str]  # prompts the model saw cut short


def prompt_lab(encoder: Encoder, image: Image.Image | np.ndarray, labels: list[str],
               templates: list[str] | None = None) -> PromptLab:
    """Zero-shot of one image, template by template and ensembled, with each prompt's tokens.

    Same arguments, cleaning and errors as `mbm.classify.zero_shot` (which it runs), and like it, warns
    (`UserWarning`) when a prompt is truncated."""
    zs = zero_shot(encoder, image, labels, templates)
    names, rows = clean_labels(labels), list(zs.per_template)  # zero_shot's own cleaning and order
    table = np.array([[zs.per_template[t][label] for label in names] for t in rows])  # (T, L)
    infos = [[_prompt_info(encoder, prompts(label, [t])[0]) for label in names] for t in rows]
    return PromptLab(names, rows, table, np.array([zs.probs[label] for label in names]), infos,
                     encoder.context_length, zs.truncated)


def _prompt_info(encoder: Encoder, text: str) -> PromptInfo:
    n = encoder.count_tokens(text)
    return PromptInfo(text, encoder.tokens(text), n, n is not None and n > encoder.context_length)
