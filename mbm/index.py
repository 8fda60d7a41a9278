"""The vector index: a thin, strict wrapper over FAISS for inner product on L2-normalised float32 rows.

`Index` owns one `faiss.IndexIDMap2` around an index built from a factory string with
`faiss.METRIC_INNER_PRODUCT`, so callers add their own int64 ids and get back `(scores, ids)` with `-1`
(score `-inf`) where there is no result. Every entry point checks shapes and finiteness the way faiss's
`class_wrappers.py` does and turns caller mistakes into `ValueError`. `choose_factory` picks the index
type from the number of vectors: exact, then HNSW, then above `COMPRESS_ABOVE` an IVF index with compressed codes
(`compressed_factory`), trained on a sample, whose `nprobe` `build` tunes to `RECALL_TARGET` against an exact
scan; `save` is atomic and `load` turns a damaged file into `IndexFileError`.
Searches may run from several threads at once; `add` must not run concurrently with anything else.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import uuid
from pathlib import Path

import faiss
import numpy as np

from mbm.errors import InputError

log = logging.getLogger(__name__)

FLAT_MAX_VECTORS = 100_000  # at or below this, an exact flat scan is fast enough (see choose_factory)
HNSW_FACTORY = "HNSW32,Flat"  # M=32 links per node; ",Flat" keeps full vectors, so scores are exact
# faiss's default efConstruction; recall is bought with efSearch instead, which costs no build time and keeps
# recall@10 >= 0.95 on random 512-d vectors (HNSW's worst case); measured in docs/BENCHMARKS.md, "The FAISS index"
HNSW_EF_CONSTRUCTION = 40
HNSW_EF_SEARCH = 2048  # callers who measured their own (clustered) data can lower it: `set_search_params`
# Above this many vectors HNSW32,Flat holds ~(4 * dim + 300) bytes each (23 GB at 10M x 512): compress instead.
COMPRESS_ABOVE = 10_000_000
CODES_MAX_BYTES = 2**35  # SQ8 codes (dim bytes a vector) while they fit 32 GiB, then SQ4, then PQ of dim / 8 bytes
TRAIN_SAMPLE = 100_000  # IVF indexes train on a seeded sample of at most max(this, 64 per list) vectors
RECALL_TARGET = 0.95  # build() raises a compressed IVF index's nprobe until recall@10 reaches this (or all lists)

# Below this many queries a search runs on one OpenMP thread: one query's exact scan is bound by memory bandwidth,
# and split over threads it waits for a busy core (docs/BENCHMARKS.md, "Query latency"). The setting is per
# calling thread, so concurrent searches do not disturb each other.
FEW_QUERIES = 20


@contextlib.contextmanager
def _one_thread():
    """Run faiss on one OpenMP thread in the calling thread (OpenMP's thread count is per thread)."""
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def atomic_write(path: Path, write) -> None:
    """`write(tmp)` a temp file beside `path`, fsync it, then rename it to `path`: readers see the old file or the
    whole new one, never a part; the temp file goes if anything fails."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


class IndexFileError(RuntimeError):
    """A saved index that cannot be read (missing, truncated or not an index); rebuild it from the vectors."""


def choose_factory(n: int, dim: int, compress_above: int = COMPRESS_ABOVE) -> str:
    """The factory string for `n` vectors of `dim` floats (autofaiss's rule of thumb, by size).

    Up to `FLAT_MAX_VECTORS` an exact "Flat" scan wins: no training, no build time, perfect recall, and a
    scan of 100k x 512 floats costs about 20 ms on 2 cores. Above it, "HNSW32,Flat": a graph search whose
    cost grows roughly with log(n), keeping full vectors so scores are exact and recall stays high. Above
    `compress_above`, full vectors no longer fit a machine's memory: `compressed_factory`.

    Args:
        n: number of vectors the index will hold.
        dim: their dimension.
        compress_above: compress from this many vectors on (lower it to compress a smaller gallery).
    Returns:
        A string for `faiss.index_factory`.
    """
    if n < 0 or dim <= 0:
        raise ValueError(f"need n >= 0 and dim > 0, got n={n}, dim={dim}")
    if n > compress_above:
        return compressed_factory(n, dim)
    return "Flat" if n <= FLAT_MAX_VECTORS else HNSW_FACTORY


def compressed_factory(n: int, dim: int) -> str:
    """An IVF index with compressed codes for `n` vectors: about 4 * sqrt(n) lists (a power of two, at most
    65536, with at least 39 training vectors each), and the largest codes that fit `CODES_MAX_BYTES`: SQ8 (dim
    bytes a vector; recall@10 close to exact), SQ4 (half that; about 0.87), else PQ of dim / 8 bytes (about 0.5 on
    embedding-like vectors; docs/BENCHMARKS.md, "Past one machine")."""
    lists = 2 ** round(np.log2(max(1.0, 4 * np.sqrt(n))))
    lists = int(max(1, min(lists, 65536, 2 ** int(np.log2(max(1, n // 39))))))
    if n * dim <= CODES_MAX_BYTES or dim % 8:
        return f"IVF{lists},SQ8"
    return f"IVF{lists},{'SQ4' if n * dim // 2 <= CODES_MAX_BYTES else f'PQ{dim // 8}'}"


def recall_at(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean fraction of each row of `truth` (the exact top k ids) that the same row of `found` holds."""
    assert found.shape[0] == truth.shape[0]
    return float(np.mean([len(set(f[f >= 0]) & set(t[t >= 0])) / max(1, (t >= 0).sum()) for f, t in zip(found, truth)]))


def recall_vs_exact(index: Index, vectors: np.ndarray, ids: np.ndarray, queries: np.ndarray, k: int = 10) -> float:
    """recall@k of `index` for `queries` against an exact scan of `vectors` (under `ids`), the rows it holds."""
    k = min(k, len(vectors))
    truth = np.asarray(ids)[faiss.knn(np.ascontiguousarray(queries, np.float32), vectors, k,
                                      metric=faiss.METRIC_INNER_PRODUCT)[1]]  # (Q, k)
    return recall_at(index.search(queries, k)[1], truth)


def _make_inner(dim: int, factory: str) -> faiss.Index:
    """`faiss.index_factory(dim, factory, IP)` with HNSW defaults set; ValueError for a bad string."""
    if not isinstance(dim, (int, np.integer)) or dim <= 0:
        raise ValueError(f"dim must be a positive int, got {dim!r}")
    try:
        inner = faiss.index_factory(int(dim), factory, faiss.METRIC_INNER_PRODUCT)
    except (RuntimeError, TypeError) as e:
        raise InputError(f"bad faiss factory string {factory!r} (e.g. 'Flat', 'HNSW32,Flat', 'IVF64,Flat')") from e
    if isinstance(inner, faiss.IndexIDMap):
        raise ValueError(f"factory {factory!r} must not include IDMap: Index adds its own IDMap2")
    if isinstance(inner, faiss.IndexHNSW):
        inner.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        inner.hnsw.efSearch = HNSW_EF_SEARCH
    return inner


def _describe(inner: faiss.Index) -> str:
    """A factory string for a loaded index (faiss does not store the one it was built from)."""
    from faiss.contrib.factory_tools import reverse_index_factory

    try:
        desc = reverse_index_factory(inner)
    except (NotImplementedError, RuntimeError, AssertionError):
        return type(inner).__name__
    return f"{desc},Flat" if re.fullmatch(r"HNSW\d+", desc) else desc  # "HNSW32" and "HNSW32,Flat" are the same


class Index:
    """Inner-product search over L2-normalised float32 vectors with caller-chosen int64 ids.

    Args:
        dim: vector dimension.
        factory: a `faiss.index_factory` string, e.g. "Flat", "HNSW32,Flat", "IVF64,Flat".
    """

    def __init__(self, dim: int, factory: str = "Flat") -> None:
        self._index = faiss.IndexIDMap2(_make_inner(dim, factory))
        self.factory = factory

    @classmethod
    def _wrap(cls, idmap: faiss.IndexIDMap2, factory: str) -> Index:
        """An `Index` around an existing IDMap2 (used by `load`)."""
        self = cls.__new__(cls)
        self._index, self.factory = idmap, factory
        return self

    @classmethod
    def build(cls, vectors: np.ndarray, ids: np.ndarray | None = None, factory: str | None = None) -> Index:
        """Index `vectors`, training first if the index type needs it (IVF).

        Args:
            vectors: `(N, D)` float32 unit rows.
            ids: `(N,)` non-negative int64 ids; default `arange(N)`.
            factory: a factory string; default `choose_factory(N, D)`.
        Returns:
            The filled index.
        """
        x = np.asarray(vectors)
        if x.ndim != 2:
            raise ValueError(f"vectors must be 2-D (N, D), got shape {x.shape}")
        index = cls(x.shape[1], factory or choose_factory(*x.shape))
        x = index._matrix(x, "vectors")
        if not index._index.is_trained:
            index._train(x)
        ids = np.arange(len(x)) if ids is None else ids
        index.add(x, ids)
        if index.compressed:
            index._tune_nprobe(x, np.asarray(ids, np.int64))
        return index

    @property
    def dim(self) -> int:
        return self._index.d

    @property
    def ntotal(self) -> int:
        return self._index.ntotal

    def __len__(self) -> int:
        return self.ntotal

    @property
    def exact(self) -> bool:
        """True when search is an exhaustive scan (Flat), so results equal brute force."""
        return isinstance(self._inner(), faiss.IndexFlat)

    @property
    def compressed(self) -> bool:
        """True for an IVF index that keeps codes (SQ, PQ) instead of the vectors: scores are approximate too."""
        ivf = faiss.try_extract_index_ivf(self._inner())
        return ivf is not None and not isinstance(ivf, faiss.IndexIVFFlat)

    @property
    def nprobe(self) -> int | None:
        """The lists an IVF search scans (None for other kinds)."""
        ivf = faiss.try_extract_index_ivf(self._inner())
        return None if ivf is None else int(ivf.nprobe)

    def nbytes(self) -> int:
        """The bytes of the index as saved, about what it holds in memory (counted while written, not kept)."""
        sizes = []
        faiss.write_index(self._index, faiss.PyCallbackIOWriter(lambda chunk: sizes.append(len(chunk)) or len(chunk)))
        return sum(sizes)

    def __repr__(self) -> str:
        return f"Index(dim={self.dim}, factory={self.factory!r}, ntotal={self.ntotal})"

    def _inner(self) -> faiss.Index:
        return faiss.downcast_index(self._index.index)

    def _matrix(self, x: np.ndarray, what: str) -> np.ndarray:
        """`x` as a contiguous `(n, dim)` float32 array of finite values, else ValueError."""
        x = np.asarray(x)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"{what} must have shape (n, {self.dim}), got {x.shape}")
        x = np.ascontiguousarray(x, dtype="float32")
        if not np.isfinite(x).all():
            raise ValueError(f"{what} contain NaN or inf (rows {np.flatnonzero(~np.isfinite(x).all(1))[:5]}...)")
        return x

    def _train(self, x: np.ndarray) -> None:
        ivf = faiss.try_extract_index_ivf(self._inner())
        if ivf is not None:  # k-means with few points per list is fine for small galleries; say it once, in the log
            ivf.cp.min_points_per_centroid = 1
            if len(x) < 39 * ivf.nlist:
                log.info("training %s on %d vectors: under 39 per list, its lists will be uneven", self.factory, len(x))
            sample = max(TRAIN_SAMPLE, 64 * ivf.nlist)
            if len(x) > sample:  # k-means and the codes learn as well from a sample, in a fraction of the time
                x = x[np.sort(np.random.default_rng(0).choice(len(x), sample, replace=False))]
        try:
            self._index.train(x)
        except RuntimeError as e:
            raise ValueError(f"could not train {self.factory!r} on {len(x)} vectors: {e}") from e
        log.info("trained %s on %d vectors", self.factory, len(x))

    def _tune_nprobe(self, x: np.ndarray, ids: np.ndarray, queries: int = 256, k: int = 10) -> None:
        """The smallest power-of-two nprobe whose recall@k reaches `RECALL_TARGET` (or past which doubling gains
        under 0.005: PQ codes cap recall) for a sample of the indexed vectors as queries (each query's own row left
        out of both lists), against an exact scan."""
        ivf = faiss.try_extract_index_ivf(self._inner())
        rows = np.random.default_rng(1).choice(len(x), min(queries, len(x)), replace=False)
        kk, own = min(k + 1, len(x)), ids[rows][:, None]
        mask = lambda found: np.where(found == own, -1, found)  # each query's own row left out: (Q, k + 1)
        truth = mask(ids[faiss.knn(x[rows], x, kk, metric=faiss.METRIC_INNER_PRODUCT)[1]])
        measure = lambda: recall_at(mask(self.search(x[rows], kk)[1]), truth)
        ivf.nprobe = 1
        recall = measure()
        while recall < RECALL_TARGET and ivf.nprobe < ivf.nlist:
            before, ivf.nprobe = ivf.nprobe, min(2 * ivf.nprobe, ivf.nlist)
            better = measure()
            if better - recall < 0.005:  # the codes, not the lists scanned, limit recall now: keep the cheaper
                ivf.nprobe = before
                break
            recall = better
        log.info("%s: nprobe %d of %d lists, recall@%d %.3f on %d indexed vectors", self.factory, ivf.nprobe,
                 ivf.nlist, k, recall, len(rows))

    def add(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        """Add `(n, dim)` float32 unit rows under `(n,)` non-negative int64 ids."""
        x = self._matrix(vectors, "vectors")
        ids = np.asarray(ids)
        if ids.shape != (len(x),) or not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"ids must be {len(x)} integers (one per vector), got {ids.dtype} shape {ids.shape}")
        if len(ids) and ids.min() < 0:
            raise ValueError(f"ids must be >= 0 (-1 means 'no result'), got min {ids.min()}")
        if not self._index.is_trained:
            raise ValueError(f"{self.factory!r} needs training; create it with Index.build(vectors, factory=...)")
        self._index.add_with_ids(x, np.ascontiguousarray(ids, dtype="int64"))

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The `k` best inner products for each query.

        Args:
            queries: `(D,)` or `(Q, D)` float32 unit rows.
            k: results per query; more than `ntotal` is allowed.
        Returns:
            `(scores, ids)`, both `(Q, k)`: float32 scores best first and int64 ids; id -1 and score -inf
            where there are fewer than `k` results.
        """
        if not isinstance(k, (int, np.integer)) or k <= 0:
            raise ValueError(f"k must be a positive int, got {k!r}")
        q = np.asarray(queries)
        q = self._matrix(q[None] if q.ndim == 1 else q, "queries")
        scores = np.full((len(q), k), -np.inf, dtype="float32")
        ids = np.full((len(q), k), -1, dtype="int64")
        kk = min(int(k), self.ntotal)  # faiss pads with -1 itself, but asking for less keeps HNSW's ef small
        if kk:
            with _one_thread() if len(q) < FEW_QUERIES else contextlib.nullcontext():
                scores[:, :kk], ids[:, :kk] = self._index.search(q, kk)
            scores[ids < 0] = -np.inf  # faiss marks missing results with -FLT_MAX for inner product
        return scores, ids

    def set_search_params(self, *, ef_search: int | None = None, nprobe: int | None = None) -> None:
        """Trade speed for recall: `ef_search` for HNSW (candidates kept), `nprobe` for IVF (lists scanned)."""
        for name, value in (("ef_search", ef_search), ("nprobe", nprobe)):
            if value is not None and (not isinstance(value, (int, np.integer)) or value <= 0):
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        inner = self._inner()
        ivf = faiss.try_extract_index_ivf(inner)
        if ef_search is not None and not isinstance(inner, faiss.IndexHNSW):
            raise ValueError(f"ef_search applies to HNSW indexes, not {self.factory!r}")
        if nprobe is not None and ivf is None:
            raise ValueError(f"nprobe applies to IVF indexes, not {self.factory!r}")
        if ef_search is not None:
            inner.hnsw.efSearch = int(ef_search)
        if nprobe is not None:
            ivf.nprobe = int(nprobe)

    def save(self, path: str | os.PathLike) -> None:
        """Write the index to `path` atomically: a temp file in the same folder, fsynced, then renamed."""
        atomic_write(Path(path), lambda tmp: faiss.write_index(self._index, str(tmp)))
        log.info("saved %r to %s", self, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Index:
        """Read an index written by `save`; faiss stores the search knobs (efSearch, nprobe) with it.

        Raises:
            IndexFileError: the file is missing, truncated, damaged or not an `Index`; rebuild it.
        """
        path = Path(path)
        if not path.is_file():
            raise IndexFileError(f"no index file at {path}; rebuild it from the vectors (Index.build, then .save)")
        try:
            idmap = faiss.read_index(str(path))
        except (RuntimeError, MemoryError) as e:
            reason = str(e).strip().splitlines()[-1][-160:]
            raise IndexFileError(f"could not read the index at {path}: the file is truncated, damaged or not a "
                                 f"faiss index ({reason}); delete it and rebuild the index from the vectors") from e
        if not isinstance(idmap, faiss.IndexIDMap2) or idmap.metric_type != faiss.METRIC_INNER_PRODUCT:
            raise IndexFileError(f"{path} holds a {type(idmap).__name__}, not an inner-product IDMap2 index "
                                 "written by mbm.index.Index.save; rebuild the index from the vectors")
        return cls._wrap(idmap, _describe(faiss.downcast_index(idmap.index)))
