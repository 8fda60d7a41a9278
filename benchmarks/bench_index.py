"""Flat vs HNSW through `mbm.index.Index` on synthetic unit vectors: build time, single-query latency, recall@10.

For each size it builds both indexes on the same seeded random unit vectors, times `search(q, 10)` one
query at a time (what a demo user feels), and scores HNSW's top 10 against Flat's exact top 10.
Random vectors are HNSW's worst case, so recall here is a floor for real embeddings.
Run: python benchmarks/bench_index.py [--dim 128] [--sizes 1000,100000] [--queries 200]  (1M is opt-in)
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from mbm.index import HNSW_EF_SEARCH, HNSW_FACTORY, Index  # noqa: E402

K = 10


def unit_vectors(n: int, dim: int, rng: np.random.Generator, chunk: int = 100_000) -> np.ndarray:
    """`(n, dim)` float32 unit rows, generated in chunks so 1M rows do not need a float64 copy."""
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, chunk):
        block = rng.standard_normal((min(chunk, n - start), dim), dtype=np.float32)
        out[start:start + len(block)] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, or platform's guess where that file does not exist."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def timed_build(x: np.ndarray, factory: str) -> tuple[Index, float]:
    """The index over `x` and the seconds it took to build."""
    t0 = time.perf_counter()
    index = Index.build(x, factory=factory)
    return index, time.perf_counter() - t0


def latencies_ms(index: Index, queries: np.ndarray) -> np.ndarray:
    """Milliseconds for each single-vector `search(q, K)`, after one warm-up query."""
    index.search(queries[0], K)
    out = np.empty(len(queries))
    for i, q in enumerate(queries):
        t0 = time.perf_counter()
        index.search(q, K)
        out[i] = (time.perf_counter() - t0) * 1000
    return out


def recall(ids: np.ndarray, truth: np.ndarray) -> float:
    """Mean fraction of the exact top-K that the approximate top-K found."""
    return float(np.mean([len(np.intersect1d(a, b)) / K for a, b in zip(ids, truth)]))


def bench_size(n: int, dim: int, n_queries: int, ef_search: int | None) -> dict:
    """One table row: build both indexes over `n` vectors and measure them."""
    rng = np.random.default_rng(n)
    x, queries = unit_vectors(n, dim, rng), unit_vectors(n_queries, dim, rng)
    flat, flat_build = timed_build(x, "Flat")
    hnsw, hnsw_build = timed_build(x, HNSW_FACTORY)
    if ef_search is not None:
        hnsw.set_search_params(ef_search=ef_search)
    flat_ms, hnsw_ms = latencies_ms(flat, queries), latencies_ms(hnsw, queries)
    r = recall(hnsw.search(queries, K)[1], flat.search(queries, K)[1])
    p = lambda a, q: float(np.percentile(a, q))
    return {"n": n, "flat_build": flat_build, "hnsw_build": hnsw_build, "flat_p50": p(flat_ms, 50),
            "flat_p95": p(flat_ms, 95), "hnsw_p50": p(hnsw_ms, 50), "hnsw_p95": p(hnsw_ms, 95), "recall": r}


def print_table(rows: list[dict], dim: int, n_queries: int, ef_search: int | str) -> None:
    """The rows as a markdown table."""
    print(f"\ndim {dim}, {n_queries} single-vector queries, k={K}, HNSW = {HNSW_FACTORY!r} efSearch {ef_search}\n")
    print("| vectors | Flat build s | HNSW build s | Flat p50 ms | Flat p95 ms | HNSW p50 ms | HNSW p95 ms "
          "| HNSW recall@10 | Flat/HNSW p50 |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['n']:,} | {r['flat_build']:.3f} | {r['hnsw_build']:.2f} | {r['flat_p50']:.3f} "
              f"| {r['flat_p95']:.3f} | {r['hnsw_p50']:.3f} | {r['hnsw_p95']:.3f} | {r['recall']:.3f} "
              f"| {r['flat_p50'] / r['hnsw_p50']:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--sizes", default="1000,100000", help="vector counts, e.g. 1000,100000,1000000")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--ef-search", type=int, default=None, help="HNSW efSearch (default: mbm.index's)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"machine: {platform.platform()}, {cpu_model()}, {os.cpu_count()} CPU threads "
          f"(faiss uses {faiss.omp_get_max_threads()}), Python {platform.python_version()}, "
          f"faiss {faiss.__version__}, numpy {np.__version__}")
    rows = []
    for n in sizes:
        rows.append(bench_size(n, args.dim, args.queries, args.ef_search))
        print(f"  {n:,} vectors done", flush=True)
    print_table(rows, args.dim, args.queries, args.ef_search or HNSW_EF_SEARCH)


if __name__ == "__main__":
    main()
