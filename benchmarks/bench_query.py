"""Text query latency end to end at 1k-1M gallery items: exact vs HNSW vs IVF, with recall@10.

    python benchmarks/bench_query.py                                   # 1k and 100k items: about 5 min
    python benchmarks/bench_query.py --sizes 1000,100000,1000000       # + 1M: about 40 min on 2 cores
    python benchmarks/bench_query.py --sizes 10000 --kinds real,embedding-like,isotropic --indexes hnsw
        # the proxy check: real embeddings against the two synthetic kinds
    python benchmarks/bench_query.py --model ViT-B-32 --kinds isotropic --indexes flat,hnsw
        # 512-d vectors (a randomly initialised ViT-B-32 embeds the queries; no download)

For each size and kind of vectors (`benchmarks/_synthetic.py`: `isotropic` unit vectors, the worst case;
`embedding-like`, a Gaussian with the mean and covariance of the model's real image embeddings; `real`,
embeddings of rendered scenes, opt-in since encoding costs about 8 ms an image), it fills a gallery store
with N synthetic items and opens it once per index type: exact `Flat`, mbm's HNSW (`mbm.index.HNSW_FACTORY`
with its efConstruction, or each `--ef-construction`) and `IVF<lists>,Flat`. The queries are real texts
(captions of test scenes) embedded by the real model, as a person's queries are. Per index it reports:
- read s / build s: the store's vectors read from SQLite, then `Gallery.index` built and saved;
- recall@10 of the index's top 10 against the exact top 10 (brute force), and the index's own single-query
  latency (`Index.search`), over a sweep of efSearch (HNSW) or nprobe (IVF);
- end to end, at mbm's default efSearch and at the cheapest swept setting with recall@10 >= 0.95:
  `search` = `Engine.search(text, k=10)` (embed the text, FAISS, result rows: what `/search_items` runs),
  `page` = the Search tab's work, `Engine.search` and its results' `scores` (a score for every image) and
  the histogram drawn from those scores (`demo.charts.histogram_svg`); p50 and p95 over `--timed` queries;
- per size and kind, one page query part by part on the exact index.
"""

from __future__ import annotations

import argparse
import gc
import math
import random
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _synthetic import (  # noqa: E402
    EmbeddingStats,
    machine,
    make_gallery,
    model_spec,
    real_embeddings,
    unit_vectors,
)

import mbm.index  # noqa: E402
from mbm.data.language import captions  # noqa: E402
from mbm.data.shapes import make_scene  # noqa: E402
from mbm.engine import Engine, EngineConfig  # noqa: E402
from mbm.index import HNSW_EF_CONSTRUCTION, HNSW_EF_SEARCH, HNSW_FACTORY, Index  # noqa: E402
from mbm.models import create_model  # noqa: E402

K = 10
TARGET = 0.95
KINDS = ("isotropic", "embedding-like", "real")


@dataclass
class Row:
    n: int
    kind: str
    factory: str
    read_s: float
    build_s: float
    sweep: list[tuple[str, float, float, float]] = field(default_factory=list)  # (setting, recall, p50, p95)
    e2e: list[tuple[str, float, float, float, float, float]] = field(default_factory=list)
    # (setting, recall, search p50, search p95, page p50, page p95)
    parts: dict[str, float] = field(default_factory=dict)  # the exact index only: ms per part of a query


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def ms(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1000


def query_texts(n: int) -> list[str]:
    """`n` captions of test scenes: colours, shapes, places, counts and prompts, as people type them."""
    return [captions(make_scene("test", i), random.Random(i))[0] for i in range(n)]


def ivf_lists(n: int) -> int:
    """sqrt(n) lists, rounded up to a power of two (1k -> 32, 100k -> 512, 1M -> 1024)."""
    return max(8, 2 ** math.ceil(math.log2(math.sqrt(max(n, 1)))))


def recall(ids: np.ndarray, truth: np.ndarray) -> float:
    """Mean fraction of the exact top-K found in the approximate top-K."""
    return float(np.mean([len(np.intersect1d(a[a >= 0], b)) / K for a, b in zip(ids, truth)]))


def index_ms(index: Index, qv: np.ndarray) -> list[float]:
    """Single-query `Index.search(q, K)` latencies, after one warm-up."""
    index.search(qv[0], K)
    return [ms(lambda q=q: index.search(q, K)) for q in qv]


def e2e_ms(engine: Engine, gallery, texts: list[str]) -> tuple[list[float], list[float]]:
    """`Engine.search` and the Search tab's work (scores of every image + histogram) per query, in ms."""
    from demo.charts import histogram_svg

    def page(text):
        hits = engine.search(text, None, 1.0, K, 0.0, gallery)
        histogram_svg(hits.scores, 0.0, [h.score for h in hits])

    engine.search(texts[0], k=K, gallery=gallery)
    page(texts[0])
    search, whole = [], []
    for text in texts:
        search.append(ms(lambda t=text: engine.search(t, k=K, gallery=gallery)))
        whole.append(ms(lambda t=text: page(t)))
    return search, whole


def breakdown(engine: Engine, gallery, texts: list[str]) -> dict[str, float]:
    """Median ms of each part of one page query on `gallery` (its own index)."""
    from demo.charts import histogram_svg
    from mbm.search import search
    enc = engine.encoder
    parts: dict[str, list[float]] = {}
    for text in [texts[0], *texts]:
        t = {}
        t0 = time.perf_counter()
        vec = enc.encode_texts([text])[0]
        t["encode the text"], t0 = (time.perf_counter() - t0) * 1000, time.perf_counter()
        gallery.index.search(vec, K)
        t["FAISS search"], t0 = (time.perf_counter() - t0) * 1000, time.perf_counter()
        hits = search(gallery, vec, k=K, threshold=0.0)
        t["search(): FAISS + rows"], t0 = (time.perf_counter() - t0) * 1000, time.perf_counter()
        scores = gallery.image_matrix()[1] @ vec
        t["scores of every image"], t0 = (time.perf_counter() - t0) * 1000, time.perf_counter()
        histogram_svg(scores, 0.0, [h.score for h in hits])
        t["histogram_svg"] = (time.perf_counter() - t0) * 1000
        for name, v in t.items():
            parts.setdefault(name, []).append(v)
    return {name: statistics.median(v[1:]) for name, v in parts.items()}


def bench_index(engine: Engine, root: Path, store: Path, n: int, kind: str, factory: str, qv: np.ndarray,
                truth: np.ndarray, texts: list[str], sweep: list[int], ef_construction: int | None = None) -> Row:
    """Open the store with one index type, build it, sweep its knob, time the chosen settings end to end."""
    from mbm.gallery import Gallery
    gallery = Gallery(root, engine.encoder, store, factory=factory)
    t0 = time.perf_counter()
    gallery.image_matrix()
    read_s, t0 = time.perf_counter() - t0, time.perf_counter()
    default_efc = mbm.index.HNSW_EF_CONSTRUCTION
    mbm.index.HNSW_EF_CONSTRUCTION = ef_construction or default_efc  # read by Index when it makes the HNSW
    try:
        index = gallery.index
    finally:
        mbm.index.HNSW_EF_CONSTRUCTION = default_efc
    label = factory if ef_construction is None else f"{factory} efConstruction {ef_construction}"
    row = Row(n, kind, label, read_s, time.perf_counter() - t0)
    knob = "efSearch" if "HNSW" in factory else "nprobe" if "IVF" in factory else None
    settings = [None] if knob is None else sweep
    results = {}
    for value in settings:
        if knob == "efSearch":
            index.set_search_params(ef_search=value)
        elif knob == "nprobe":
            index.set_search_params(nprobe=value)
        label = "exact" if knob is None else f"{knob} {value}"
        r = recall(index.search(qv, K)[1], truth)
        lat = index_ms(index, qv)
        row.sweep.append((label, r, pct(lat, 50), pct(lat, 95)))
        results[value] = r
    chosen = [None] if knob is None else []
    if knob == "efSearch":
        chosen.append(HNSW_EF_SEARCH)
    if knob is not None:
        good = [v for v in settings if results[v] >= TARGET]
        cheapest = good[0] if good else settings[-1]
        if cheapest not in chosen:
            chosen.append(cheapest)
    for value in chosen:
        if knob == "efSearch":
            index.set_search_params(ef_search=value)
        elif knob == "nprobe":
            index.set_search_params(nprobe=value)
        r = recall(index.search(qv, K)[1], truth)
        search, page = e2e_ms(engine, gallery, texts)
        label = "exact" if knob is None else f"{knob} {value}" + (" (mbm default)" if value == HNSW_EF_SEARCH
                                                                  and knob == "efSearch" else "")
        row.e2e.append((label, r, pct(search, 50), pct(search, 95), pct(page, 50), pct(page, 95)))
    if knob is None:
        row.parts = breakdown(engine, gallery, texts)
    gallery.close()
    shutil.rmtree(store / "index", ignore_errors=True)
    return row


def print_tables(rows: list[Row], encode: list[float], args, stats: EmbeddingStats | None) -> None:
    print(f"\n### End to end: {min(args.timed, args.queries)} text queries timed, recall over {args.queries}; "
          f"k={K}; ms\n")
    print("| items | data | index | read s | build s | setting | recall@10 | search p50 | search p95 "
          "| page p50 | page p95 |")
    print("|---:|---|---|---:|---:|---|---:|---:|---:|---:|---:|")
    for r in rows:
        for i, (label, rec, s50, s95, p50, p95) in enumerate(r.e2e):
            build = (f"{r.read_s:.2f} | {r.build_s:.2f}") if i == 0 else " | "
            print(f"| {r.n:,} | {r.kind} | {r.factory} | {build} | {label} | {rec:.3f} | {s50:.1f} | {s95:.1f} "
                  f"| {p50:.1f} | {p95:.1f} |")
    print(f"\nEncoding one query text alone: p50 {pct(encode, 50):.1f} ms, p95 {pct(encode, 95):.1f} ms.")
    if stats is not None:
        print(f"embedding-like: Gaussian fit to {stats.n_images} real image embeddings, effective dimension "
              f"(participation ratio) {stats.effective_dim:.1f} of {len(stats.mean)}, mean norm "
              f"{np.linalg.norm(stats.mean):.2f}.")
    print("\n### The index alone: recall@10 and single-query `Index.search` latency (ms) over its knob\n")
    print("| items | data | index | setting | recall@10 | p50 | p95 |\n|---:|---|---|---|---:|---:|---:|")
    for r in rows:
        for label, rec, p50, p95 in r.sweep:
            print(f"| {r.n:,} | {r.kind} | {r.factory} | {label} | {rec:.3f} | {p50:.3f} | {p95:.3f} |")
    parted = [r for r in rows if r.parts]
    if parted:
        names = list(parted[0].parts)
        print("\n### One page query, part by part, on the exact index (median ms)\n")
        print("| items | data | " + " | ".join(names) + " |\n|---:|---|" + "---:|" * len(names))
        for r in parted:
            print(f"| {r.n:,} | {r.kind} | " + " | ".join(f"{r.parts[k]:.2f}" for k in names) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,100000", help="gallery sizes, e.g. 1000,100000,1000000")
    parser.add_argument("--kinds", default="isotropic,embedding-like", help=f"vector kinds, of {KINDS}")
    parser.add_argument("--indexes", default="flat,hnsw,ivf",
                        help=f"of flat (exact), hnsw ({HNSW_FACTORY!r}, mbm's), ivf (IVF<lists>,Flat)")
    parser.add_argument("--ivf-lists", type=int, default=None, help="IVF lists (default sqrt(n), a power of 2)")
    parser.add_argument("--queries", type=int, default=200, help="query texts (captions of test scenes) for recall")
    parser.add_argument("--timed", type=int, default=100, help="of those, how many are timed end to end")
    parser.add_argument("--ef-search", default="16,32,64,128,256,512,1024,2048", help="HNSW efSearch sweep")
    parser.add_argument("--ef-construction", default=None,
                        help=f"HNSW efConstruction values, one index each (default: mbm's {HNSW_EF_CONSTRUCTION})")
    parser.add_argument("--nprobe", default="1,2,4,8,16,32,64,128,256", help="IVF nprobe sweep (up to the lists)")
    parser.add_argument("--fit-images", type=int, default=2048, help="scenes embedded to fit embedding-like")
    parser.add_argument("--model", default="mbm-shapes",
                        help="a model spec; a bare open_clip architecture (ViT-B-32) means random weights")
    parser.add_argument("--workdir", default=None, help="where the stores go (default: a temporary folder)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    kinds = [k.strip() for k in args.kinds.split(",")]
    if unknown := set(kinds) - set(KINDS):
        parser.error(f"unknown kinds {sorted(unknown)}; choose from {KINDS}")
    if unknown := {i.strip() for i in args.indexes.split(",")} - {"flat", "hnsw", "ivf"}:
        parser.error(f"unknown indexes {sorted(unknown)}; choose from flat, hnsw, ivf")
    ef_sweep = [int(v) for v in args.ef_search.split(",")]
    efcs = [int(v) for v in args.ef_construction.split(",")] if args.ef_construction else [None]
    nprobe_sweep = [int(v) for v in args.nprobe.split(",")]

    work = Path(tempfile.mkdtemp(prefix="mbm-bench-query-", dir=args.workdir))
    encoder = create_model(model_spec(args.model, work), device="cpu")
    engine = Engine(EngineConfig(model=args.model, cache_dir=str(work / "cache"), device="cpu"), encoder=encoder)
    print(f"machine: {machine()}\nmodel: {args.model} ({encoder.embed_dim}-d); HNSW = {HNSW_FACTORY!r} "
          f"efConstruction {HNSW_EF_CONSTRUCTION}, mbm's default efSearch {HNSW_EF_SEARCH}", flush=True)
    texts = query_texts(args.queries)
    qv = encoder.encode_texts(texts)
    encoder.encode_texts(texts[:1])
    encode = [ms(lambda t=t: encoder.encode_texts([t])) for t in texts]
    stats = EmbeddingStats.fit(encoder, args.fit_images) if "embedding-like" in kinds else None

    rows = []
    try:
        for n in sizes:
            for kind in kinds:
                t0 = time.perf_counter()
                if kind == "real":
                    x = real_embeddings(encoder, n, split="val", size=min(encoder.image_size, 224))
                else:
                    x = unit_vectors(kind, n, encoder.embed_dim, seed=n, stats=stats)
                root, store = work / f"{kind}-{n}", work / f"{kind}-{n}-store"
                make_gallery(root, encoder, x, store=store).close()
                truth = faiss.knn(qv, x, K, metric=faiss.METRIC_INNER_PRODUCT)[1] + 1  # item ids are 1..N
                del x
                print(f"{n:,} {kind}: store written in {time.perf_counter() - t0:.1f} s", flush=True)
                lists = args.ivf_lists or ivf_lists(n)
                for name in args.indexes.split(","):
                    factory = {"flat": "Flat", "hnsw": HNSW_FACTORY, "ivf": f"IVF{lists},Flat"}[name.strip()]
                    sweep = ef_sweep if "HNSW" in factory else [p for p in nprobe_sweep if p <= lists]
                    for efc in efcs if "HNSW" in factory else [None]:
                        row = bench_index(engine, root, store, n, kind, factory, qv, truth, texts[:args.timed],
                                          sweep, efc)
                        rows.append(row)
                        gc.collect()
                        print(f"  {row.factory}: read {row.read_s:.1f} s, built in {row.build_s:.1f} s; "
                              + "; ".join(f"{e[0]}: recall {e[1]:.3f}, page p50 {e[4]:.1f} ms" for e in row.e2e),
                              flush=True)
                shutil.rmtree(store, ignore_errors=True)
                shutil.rmtree(root, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print_tables(rows, encode, args, stats)


if __name__ == "__main__":
    main()
