"""The commands past one machine: `embed` (images to shards on a Dask cluster) and `index --from-shards` (shards
into a gallery's store and FAISS index). The library logs; this module prints."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from mbm.shards import INSTALL, MANIFEST, SHARD_SIZE

QUERIES = 1000  # caption vectors used as queries when the index's recall@10 is measured against exact search


def flags_embed(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", help="a folder of images, a text file of paths, or a .parquet/.csv with a 'path' column")
    p.add_argument("--out", required=True, metavar="SHARDS",
                   help="the shards' folder; on a cluster, at the same path on every worker (a shared file system)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--cluster", default=None, metavar="ADDRESS",
                       help="a running Dask scheduler, e.g. tcp://host:8786 (dask-jobqueue, Kubernetes, ...)")
    where.add_argument("--workers", type=int, default=1, help="else: local worker processes on 127.0.0.1 (default 1)")
    p.add_argument("--shard-size", type=int, default=SHARD_SIZE, help=f"images per shard (default {SHARD_SIZE})")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads per worker (default: cores / workers locally; the worker's own on a cluster)")
    p.add_argument("--model", default=None, help="model spec (default: $MBM_MODEL, else as `index` chooses)")
    p.add_argument("--device", default=None, help="auto, cpu, cuda (on each worker; default: $MBM_DEVICE or auto)")


def flags_from_shards(p: argparse.ArgumentParser) -> None:
    p.add_argument("--from-shards", default=None, metavar="SHARDS",
                   help="import the shards of `python -m mbm embed` instead of reading the folder")
    p.add_argument("--compress-above", type=int, default=None, metavar="N",
                   help="with --from-shards: a compressed IVF index from N images on (default: 10,000,000)")


def embed(args, progress) -> int:
    try:
        from mbm import embed as dist
    except ImportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from mbm.engine import EngineConfig
    from mbm.models import default_model
    config = EngineConfig.from_env(model=args.model, device=args.device)
    spec = config.model or default_model(config.on_space)
    with dist.connect(args.cluster, args.workers) as (client, threads):
        where = args.cluster or f"a local cluster of {args.workers} worker(s) on 127.0.0.1"
        print(f"embedding {args.source} with {spec} on {where}", file=sys.stderr)
        report = dist.embed(args.source, args.out, client, spec, device=config.device, precision=config.precision,
                            shard_size=args.shard_size, threads=args.threads or threads, progress=progress)
    print(report.summary())
    for path in report.missing[:20]:
        print(f"  missing {path}")
    print(f"{Path(args.out) / MANIFEST} written; next: python -m mbm index --from-shards {args.out}")
    return 0


def index_from_shards(args, progress) -> int:
    """Import the shards into the store of the gallery of their root, then build (and measure) its index."""
    from mbm.engine import Engine, EngineConfig
    from mbm.gallery import Gallery
    from mbm.index import choose_factory
    from mbm.shards import Manifest, import_shards, need_pyarrow
    try:
        need_pyarrow()
    except ImportError as e:
        print(f"error: {e}; {INSTALL}", file=sys.stderr)
        return 2
    manifest = Manifest.read(args.from_shards)
    config = EngineConfig.from_env(model=args.model or manifest.model, cache_dir=args.cache, device=args.device,
                                   index_factory=args.index_factory)
    engine = Engine(config)
    gallery = Gallery(manifest.root, engine.encoder, engine.store_for(manifest.root))  # no sync: the shards hold it
    rows = import_shards(gallery, args.from_shards, progress)
    chosen = args.index_factory or (choose_factory(len(gallery), gallery.encoder.embed_dim, args.compress_above)
                                    if args.compress_above is not None else None)
    gallery.record_factory(chosen)  # None: the choice by size, as any gallery
    start = time.perf_counter()
    index = gallery.index  # built, tuned and saved
    built = time.perf_counter() - start
    facts = dict(root=str(gallery.root), store=str(gallery.store), imported=rows, items=len(gallery),
                 index=index.factory, exact=index.exact, nprobe=index.nprobe, build_s=round(built, 2),
                 index_bytes=index.nbytes(), flat_bytes=len(index) * (4 * index.dim + 8), **_recall(gallery, index))
    if args.json:
        print(json.dumps(facts, indent=2))
        return 0
    print(f"{gallery.root}: {rows} rows imported, {len(gallery)} images searchable with {engine.encoder.name}")
    print(f"index {index.factory} ({'exact' if index.exact else 'approximate'}"
          f"{f', nprobe {index.nprobe}' if index.nprobe else ''}) built in {built:.1f} s: "
          f"{facts['index_bytes'] / 2**20:.1f} MiB (exact Flat: {facts['flat_bytes'] / 2**20:.1f} MiB); "
          f"recall@10 {facts['recall_at_10']:.3f} against exact search for {facts['queries']} caption queries")
    return 0


def _recall(gallery, index) -> dict:
    """recall@10 of the gallery's index against an exact scan, its captions (text queries) as the queries."""
    from mbm.index import recall_vs_exact
    ids, vectors = gallery.image_matrix()
    _, _, captions = gallery.captions()
    if not len(ids) or not len(captions):
        return dict(recall_at_10=float("nan"), queries=0)
    rows = np.random.default_rng(0).choice(len(captions), min(QUERIES, len(captions)), replace=False)
    return dict(recall_at_10=round(recall_vs_exact(index, vectors, ids, captions[rows]), 4), queries=len(rows))
