"""Exact against approximate search: one query on the exact index and on an IVF or HNSW one, with its knob.

The approximate indexes are built once per gallery (cached) and shared, so setting the knob and searching
happen under the index's own lock.
"""

from __future__ import annotations

import statistics
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mbm.errors import InputError
from mbm.explore._cache import cached, whole
from mbm.index import HNSW_EF_SEARCH, Index

if TYPE_CHECKING:
    from mbm.gallery import Gallery

INDEX_KINDS = {"ivf": "nprobe", "hnsw": "efSearch"}  # kind -> the name of its speed/recall knob
HNSW_M = 8  # few links per node, so a small efSearch visibly loses recall even on a gallery of hundreds


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
    k = whole(k, 1, 10**6, f"k must be a whole number of at least 1, got {k!r}")
    knob = whole(knob, 1, top, f"{INDEX_KINDS[kind]} must be a whole number from 1 to {top} here, got {knob!r}")
    exact = gallery.index
    if not exact.exact or len(exact) != len(ids):  # approximate itself, or holding video frames too: scan the images
        exact = cached(gallery, "index:Flat", lambda: Index.build(vecs, ids, "Flat"))
    approx, lock = cached(gallery, f"index:{factory}", lambda: (Index.build(vecs, ids, factory), threading.Lock()))
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
