"""The FAISS wrapper: exact against brute-force numpy, HNSW/IVF recall, strict input checks, safe save/load."""

import faiss
import numpy as np
import pytest

from mbm.index import (
    FEW_QUERIES,
    FLAT_MAX_VECTORS,
    HNSW_EF_CONSTRUCTION,
    HNSW_EF_SEARCH,
    HNSW_FACTORY,
    Index,
    IndexFileError,
    choose_factory,
)


def unit(n: int, d: int, seed: int) -> np.ndarray:
    """`(n, d)` seeded random float32 unit rows."""
    x = np.random.default_rng(seed).standard_normal((n, d), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def brute_force(x: np.ndarray, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k inner products, padded like Index.search (-inf, -1) when k > len(x)."""
    sims = q @ x.T  # (Q, N)
    order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    scores = np.take_along_axis(sims, order, axis=1)
    pad = max(0, k - len(x))
    return (np.pad(scores, ((0, 0), (0, pad)), constant_values=-np.inf),
            np.pad(order, ((0, 0), (0, pad)), constant_values=-1))


def recall_at(ids: np.ndarray, truth: np.ndarray) -> float:
    """Mean fraction of the true top-k found in the returned top-k."""
    return float(np.mean([len(set(a) & set(b)) / truth.shape[1] for a, b in zip(ids, truth)]))


@pytest.mark.parametrize("n, d, k, nq", [
    (1, 8, 1, 3),
    (100, 16, 5, 7),
    (1000, 64, 10, 25),   # >= 20 queries: faiss switches to its BLAS path
    (2000, 512, 10, 40),
    (50, 32, 80, 5),      # k > n: padded with -1 / -inf
    (3, 4, 3, 1),
])
def test_flat_matches_brute_force(n, d, k, nq):
    x, q = unit(n, d, seed=n), unit(nq, d, seed=n + 1)
    index = Index.build(x)
    scores, ids = index.search(q, k)
    want_scores, want_ids = brute_force(x, q, k)
    assert scores.dtype == np.float32 and ids.dtype == np.int64 and ids.shape == (nq, k)
    np.testing.assert_array_equal(ids, want_ids)
    np.testing.assert_allclose(scores, want_scores, rtol=0, atol=1e-5)


@pytest.mark.parametrize("factory", ["Flat", "HNSW16,Flat", "IVF16,Flat"])
def test_few_queries_on_one_thread_match_a_batch(factory):
    """Searches of fewer than FEW_QUERIES rows run on one OpenMP thread: same results as a batch on all of
    them, and the caller's thread count is back afterwards."""
    x, q = unit(3000, 32, seed=20), unit(FEW_QUERIES + 5, 32, seed=21)
    index = Index.build(x, factory=factory)
    threads = faiss.omp_get_max_threads()
    batch = index.search(q, 10)
    for i in (0, 3, FEW_QUERIES + 4):
        single = index.search(q[i], 10)
        np.testing.assert_array_equal(single[1][0], batch[1][i])
        np.testing.assert_allclose(single[0][0], batch[0][i], atol=1e-5)
    few = index.search(q[:FEW_QUERIES - 1], 10)
    np.testing.assert_array_equal(few[1], batch[1][:FEW_QUERIES - 1])
    assert faiss.omp_get_max_threads() == threads


def test_one_dimensional_query_is_one_row():
    x = unit(20, 8, seed=0)
    scores, ids = Index.build(x).search(x[3], 2)
    assert ids.shape == (1, 2) and ids[0, 0] == 3 and scores[0, 0] == pytest.approx(1.0, abs=1e-6)


def test_custom_ids_round_trip():
    x = unit(300, 32, seed=1)
    ids = np.random.default_rng(2).choice(10**15, size=300, replace=False).astype(np.int64)
    index = Index.build(x[:200], ids[:200])
    index.add(x[200:], ids[200:])
    _, got = index.search(x, 1)
    np.testing.assert_array_equal(got[:, 0], ids)
    assert len(index) == index.ntotal == 300


def test_empty_index_returns_no_results():
    index = Index(16, "HNSW32,Flat")
    scores, ids = index.search(unit(3, 16, seed=0), 4)
    assert (ids == -1).all() and np.isneginf(scores).all() and scores.shape == (3, 4)


def test_properties_and_repr():
    index = Index.build(unit(10, 8, seed=0))
    assert (index.dim, index.factory, index.exact, len(index)) == (8, "Flat", True, 10)
    assert repr(index) == "Index(dim=8, factory='Flat', ntotal=10)"
    assert not Index(8, HNSW_FACTORY).exact


@pytest.mark.parametrize("factory", ["Flat", "HNSW16,Flat", "IVF8,Flat"])
def test_save_load_round_trip(tmp_path, factory):
    x, q = unit(500, 32, seed=3), unit(10, 32, seed=4)
    index = Index.build(x, np.arange(500) * 7, factory=factory)
    path = tmp_path / "vectors.faiss"
    index.save(path)
    index.save(path)  # overwriting an existing file works too
    loaded = Index.load(path)
    assert (loaded.factory, loaded.dim, loaded.ntotal) == (factory, 32, 500)
    for got, want in zip(loaded.search(q, 5), index.search(q, 5)):
        np.testing.assert_array_equal(got, want)
    assert [p.name for p in tmp_path.iterdir()] == ["vectors.faiss"]  # no temp file left behind


def test_failed_save_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "index.faiss"
    Index.build(unit(10, 8, seed=0)).save(path)
    before = path.read_bytes()

    def killed_midway(index, name):
        with open(name, "wb") as f:
            f.write(b"IxM2 half")
        raise KeyboardInterrupt

    monkeypatch.setattr(faiss, "write_index", killed_midway)
    with pytest.raises(KeyboardInterrupt):
        Index.build(unit(20, 8, seed=1)).save(path)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["index.faiss"]


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "missing", "wrong_type"])
def test_damaged_file_raises_index_file_error(tmp_path, damage):
    path = tmp_path / "index.faiss"
    Index.build(unit(200, 16, seed=0)).save(path)
    data = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "missing":
        path.unlink()
    else:
        faiss.write_index(faiss.IndexFlatL2(16), str(path))
    with pytest.raises(IndexFileError, match="rebuild") as err:
        Index.load(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("call, match", [
    (lambda ix: ix.add(unit(3, 9, 0), np.arange(3)), r"shape \(n, 8\), got \(3, 9\)"),
    (lambda ix: ix.add(unit(1, 8, 0)[0], np.arange(1)), r"shape \(n, 8\), got \(8,\)"),
    (lambda ix: ix.add(np.full((2, 8), np.nan), np.arange(2)), "NaN"),
    (lambda ix: ix.add(unit(3, 8, 0), np.arange(2)), "ids must be 3 integers"),
    (lambda ix: ix.add(unit(3, 8, 0), np.arange(3.0)), "ids must be 3 integers"),
    (lambda ix: ix.add(unit(2, 8, 0), np.array([0, -1])), "ids must be >= 0"),
    (lambda ix: ix.search(unit(2, 4, 0), 1), r"shape \(n, 8\), got \(2, 4\)"),
    (lambda ix: ix.search(np.full(8, np.inf), 1), "NaN or inf"),
    (lambda ix: ix.search(unit(1, 8, 0), 0), "k must be a positive int"),
    (lambda ix: ix.set_search_params(ef_search=64), "ef_search applies to HNSW"),
    (lambda ix: ix.set_search_params(nprobe=4), "nprobe applies to IVF"),
    (lambda ix: Index(8, "NotAnIndex"), "'NotAnIndex'"),
    (lambda ix: Index(0, "Flat"), "dim must be a positive int"),
    (lambda ix: Index(8, "IDMap2,Flat"), "must not include IDMap"),
    (lambda ix: Index(8, "IVF4,Flat").add(unit(8, 8, 0), np.arange(8)), "needs training"),
    (lambda ix: Index.build(unit(3, 8, 0), factory="IVF4,Flat"), "could not train"),
])
def test_strict_checks(call, match):
    index = Index.build(unit(10, 8, seed=0))
    with pytest.raises(ValueError, match=match):
        call(index)
    assert index.ntotal == 10  # a rejected call changes nothing


@pytest.mark.parametrize("n, factory", [
    (0, "Flat"), (1000, "Flat"), (FLAT_MAX_VECTORS, "Flat"),
    (FLAT_MAX_VECTORS + 1, HNSW_FACTORY), (10**7, HNSW_FACTORY),
])
def test_choose_factory(n, factory):
    assert choose_factory(n, 512) == factory


def embedding_like(n: int, d: int, seed: int, shift: float = 0.0) -> np.ndarray:
    """`(n, d)` unit rows shaped like real image embeddings: a Gaussian with a mean direction (norm about 0.45
    once normalised) and a power-law spectrum (eigenvalue i ~ 1/i: about 18 effective dimensions of 128, as
    mbm-shapes' image embeddings have; see benchmarks/_synthetic.py). `shift` moves the mean along a second
    direction, as text queries sit apart from the images (the modality gap)."""
    basis = np.linalg.qr(np.random.default_rng(99).standard_normal((d, d)))[0]  # the same for every seed
    scale = np.sqrt(1 / np.arange(1, d + 1) / np.sum(1 / np.arange(1, d + 1)))  # total variance 1
    mean = 0.5 * basis[:, 0] + shift * basis[:, 1]
    z = np.random.default_rng(seed).standard_normal((n, d))
    x = (mean + (z * scale) @ basis.T).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_default_hnsw_recall_at_10_on_embedding_like_data():
    """The index a large gallery gets (choose_factory above FLAT_MAX_VECTORS, with mbm's efConstruction and
    efSearch) finds >= 95% of the exact top 10 for off-cloud queries. The settings are calibrated at 1M items
    by benchmarks/bench_query.py; this small case guards that they are applied and sane."""
    x, q = embedding_like(10_000, 128, seed=10), embedding_like(200, 128, seed=11, shift=0.3)
    index = Index.build(x, factory=choose_factory(10 * FLAT_MAX_VECTORS, 128))
    inner = faiss.downcast_index(index._index.index)
    assert (inner.hnsw.efSearch, inner.hnsw.efConstruction) == (HNSW_EF_SEARCH, HNSW_EF_CONSTRUCTION)
    _, truth = brute_force(x, q, 10)
    assert not index.exact and recall_at(index.search(q, 10)[1], truth) >= 0.95


def test_hnsw_ef_search_trades_recall():
    x, q = unit(5000, 64, seed=12), unit(100, 64, seed=13)
    index = Index.build(x, factory="HNSW16,Flat")
    _, truth = brute_force(x, q, 10)
    index.set_search_params(ef_search=10)
    low = recall_at(index.search(q, 10)[1], truth)
    index.set_search_params(ef_search=256)
    high = recall_at(index.search(q, 10)[1], truth)
    assert low < high and high >= 0.95


def test_ivf_with_nprobe():
    x, q = unit(5000, 32, seed=14), unit(50, 32, seed=15)
    index = Index.build(x, factory="IVF64,Flat")
    _, truth = brute_force(x, q, 10)
    index.set_search_params(nprobe=1)
    low = recall_at(index.search(q, 10)[1], truth)
    index.set_search_params(nprobe=64)  # every list scanned: exact
    scores, ids = index.search(q, 10)
    assert low < 0.9 and recall_at(ids, truth) == 1.0
    np.testing.assert_allclose(scores, brute_force(x, q, 10)[0], atol=1e-5)
