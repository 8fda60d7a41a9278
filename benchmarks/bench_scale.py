"""Past one machine (issue 21): indexes at a million vectors, Dask workers against the single-process sync, and the
image towers' FLOPs for the estimate of 100M images on GPUs.

    python benchmarks/bench_scale.py index [--n 1000000] [--dim 128] [--queries 200] [--kind embedding-like]
    python benchmarks/bench_scale.py embed [--n 1000] [--folder DIR] [--model mbm-shapes] [--workers 1,2]
    python benchmarks/bench_scale.py flops [--models ViT-B-32,ViT-L-14]

`index`: N unit vectors (`embedding-like`: the mean and covariance of mbm-shapes' image embeddings, 128-d, as
benchmarks/bench_query.py uses; or `isotropic`), held-out queries from the same distribution, and per index type
(exact `Flat`, mbm's `HNSW32,Flat`, the compressed choice `mbm.index.compressed_factory(N, D)` with the nprobe
`Index.build` tunes, and the same lists with the other codes mbm may choose: SQ8, SQ4, PQ of D / 8 bytes) its
bytes (`Index.nbytes`, what it holds in memory), build time, single-query p50 and recall@10 against the exact
top 10.

`embed`: a folder of N JPEGs (320-2000 px, made once; benchmarks/bench_sync.py's) embedded three ways from a
fresh start each: `python -m mbm index FOLDER` (the single-process sync: its own time and the command's), and
`mbm.embed.embed` on a LocalCluster of 1 and of 2 worker processes (the cluster's start, the model's loading on the
workers, images/s once loaded, the whole), then `python -m mbm index --from-shards` of the shards.

`flops`: an open_clip image tower's forward FLOPs for one image (torch's FlopCounterMode on randomly
initialised weights: no download), the number the estimate in docs/BENCHMARKS.md starts from.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import faiss

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _synthetic import ROOT, EmbeddingStats, machine, unit_vectors  # noqa: E402

from mbm.index import HNSW_FACTORY, Index, compressed_factory, recall_at  # noqa: E402

K = 10


def bench_index(args) -> None:
    n, dim = args.n, args.dim
    if args.kind == "embedding-like":
        from mbm.models import create_model
        encoder = create_model("mbm-shapes", device="cpu")
        assert encoder.embed_dim == dim, f"mbm-shapes' embeddings are {encoder.embed_dim}-d"
        stats = EmbeddingStats.fit(encoder)
        x, q = stats.sample(n, seed=0), stats.sample(args.queries, seed=1)
    else:
        x, q = unit_vectors("isotropic", n, dim, seed=0), unit_vectors("isotropic", args.queries, dim, seed=1)
    truth = faiss.knn(q, x, K, metric=faiss.METRIC_INNER_PRODUCT)[1]
    chosen = compressed_factory(n, dim)
    lists = chosen.split(",")[0]
    others = [f"{lists},{codes}" for codes in ("SQ8", "SQ4", f"PQ{dim // 8}") if f"{lists},{codes}" != chosen]
    print(f"{n:,} x {dim} {args.kind} vectors, {args.queries} held-out queries, k={K}; {machine()}")
    print("| index | saved | bytes / vector | memory once loaded | build s | query p50 ms | recall@10 | setting |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for factory in ("Flat", HNSW_FACTORY, chosen, *others):
        start = time.perf_counter()
        index = Index.build(x, factory=factory)
        built = time.perf_counter() - start
        times = []
        for row in q:
            t = time.perf_counter()
            index.search(row, K)
            times.append(1000 * (time.perf_counter() - t))
        recall = recall_at(index.search(q, K)[1], truth)
        size = index.nbytes()
        setting = f"nprobe {index.nprobe}" if index.nprobe else ("efSearch 2048" if "HNSW" in factory else "exact")
        mark = " (mbm's choice)" if factory == chosen else ""
        print(f"| `{factory}`{mark} | {size / 2**20:,.0f} MiB | {size / n:,.0f} | {loaded_mib(index):,.0f} MiB | "
              f"{built:.1f} | "
              f"{statistics.median(times):.2f} | {recall:.3f} | {setting} |", flush=True)
        del index
        gc.collect()


def loaded_mib(index: Index) -> float:
    """What a fresh process's resident memory grows by when it reads the saved index (IDMap2's reverse map, which
    is not saved, included)."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "index.faiss"
        index.save(path)
        code = ("import faiss, sys\n"
                "rss = lambda: int(open('/proc/self/statm').read().split()[1]) * 4096\n"
                "before = rss(); index = faiss.read_index(sys.argv[1]); print((rss() - before) / 2**20)")
        return float(subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True,
                                    check=True).stdout)


def _mbm(*argv: str) -> tuple[float, str]:
    """`python -m mbm ARGV` from a fresh interpreter: (wall seconds, stdout)."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "mbm", *argv], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"}, check=True)
    return time.perf_counter() - start, done.stdout


def bench_embed(args) -> None:
    from bench_sync import make_folder

    from mbm.embed import connect, embed
    folder = Path(args.folder or Path(tempfile.gettempdir()) / "mbm-bench-sync-jpegs")
    make_folder(folder, args.n)
    n = len(list(folder.glob("*.jpg")))
    work = Path(tempfile.mkdtemp(prefix="mbm-bench-scale-"))
    print(f"{n} JPEGs in {folder}, model {args.model}; {machine()}")
    print("| how | start s | model load s | images/s once loaded | whole s | images/s overall |")
    print("|---|---:|---:|---:|---:|---:|")
    wall, out = _mbm("index", str(folder), "--model", args.model, "--cache", str(work / "sync"), "--json")
    sync_s = json.loads(out)["seconds"]
    print(f"| `python -m mbm index` (one process) | | | {n / sync_s:.1f} (the sync) | {wall:.1f} | {n / wall:.1f} |",
          flush=True)
    shards = None
    for workers in [int(w) for w in args.workers.split(",")]:
        shards = work / f"shards-{workers}"
        start = time.perf_counter()
        with connect(None, workers=workers, timeout=600) as (client, threads):
            started = time.perf_counter() - start
            report = embed(folder, shards, client, args.model, threads=threads, shard_size=args.shard_size)
        whole = time.perf_counter() - start
        busy = report.seconds - report.load_seconds
        print(f"| Dask, {workers} local worker(s) x {threads} thread(s) | {started:.1f} | {report.load_seconds:.1f} | "
              f"{report.encoded / busy:.1f} | {whole:.1f} | {n / whole:.1f} |", flush=True)
    wall, out = _mbm("index", "--from-shards", str(shards), "--cache", str(work / "shards-cache"), "--json")
    facts = json.loads(out)
    print(f"\n`index --from-shards`: {facts['imported']} rows imported and `{facts['index']}` built in {wall:.1f} s "
          f"(the command, a fresh interpreter); the index itself {facts['build_s']} s")
    shutil.rmtree(work, ignore_errors=True)


def bench_flops(args) -> None:
    import open_clip
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    print("| image tower | input px | GFLOPs / image |")
    print("|---|---:|---:|")
    for name in args.models.split(","):
        model = open_clip.create_model(name, pretrained=None).eval()
        size = model.visual.image_size
        size = size[0] if isinstance(size, (tuple, list)) else size
        with torch.inference_mode(), FlopCounterMode(display=False) as counter:
            model.encode_image(torch.zeros(1, 3, size, size))
        print(f"| {name} | {size} | {counter.get_total_flops() / 1e9:.2f} |", flush=True)
        del model
        gc.collect()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("index")
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--kind", choices=("embedding-like", "isotropic"), default="embedding-like")
    p = sub.add_parser("embed")
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--folder", default=None)
    p.add_argument("--model", default="mbm-shapes")
    p.add_argument("--workers", default="1,2")
    p.add_argument("--shard-size", type=int, default=50)
    p = sub.add_parser("flops")
    p.add_argument("--models", default="ViT-B-32,ViT-B-16,ViT-L-14")
    args = parser.parse_args()
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print(f"$ python benchmarks/bench_scale.py {' '.join(sys.argv[1:])}  ({when}, load {os.getloadavg()[0]:.2f})")
    {"index": bench_index, "embed": bench_embed, "flops": bench_flops}[args.what](args)


if __name__ == "__main__":
    main()
