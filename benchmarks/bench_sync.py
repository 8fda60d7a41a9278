"""Indexing throughput and incremental sync of a folder of JPEGs, and text-query latency on it.

    python benchmarks/bench_sync.py [--n 2000] [--model mbm-shapes] [--folder DIR] [--queries 50]

Writes `n` JPEG scenes of varied sizes (320-2000 px, made once and reused from `--folder`), then
times, each in the same run: the first `sync()` (images/s), a re-sync with nothing changed, a re-sync
after rewriting 10 files, and one after deleting 10; and `Engine.search` on the result (p50/p95).
The store lives in a fresh temporary folder, so every run starts cold.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from mbm.data.shapes import COLOURS, SHAPES, make_scene, render  # noqa: E402
from mbm.engine import Engine, EngineConfig  # noqa: E402


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    if Path("/proc/cpuinfo").is_file():
        names = [ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                 if ln.startswith("model name")]
        cpu = names[0] if names else cpu
    import torch
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads)"


def make_folder(folder: Path, n: int) -> None:
    """`n` JPEGs, 320-2000 px on a side, reused when the folder already holds them."""
    done = {p.name for p in folder.glob("*.jpg")} if folder.is_dir() else set()
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        name = f"scene-{i:05d}.jpg"
        if name not in done:
            side = 320 + (i * 7919) % 1681
            render(make_scene("test", i), size=side, supersample=1).save(folder / name, quality=88)


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--model", default="mbm-shapes")
    parser.add_argument("--folder", default=str(Path(tempfile.gettempdir()) / "mbm-bench-jpegs"))
    parser.add_argument("--queries", type=int, default=50)
    args = parser.parse_args()
    source = Path(args.folder) / str(args.n)
    _, made = timed(lambda: make_folder(source, args.n))
    work = Path(tempfile.mkdtemp(prefix="mbm-bench-"))
    folder = work / "photos"
    shutil.copytree(source, folder)
    mb = sum(p.stat().st_size for p in folder.glob("*.jpg")) / 2**20
    engine = Engine(EngineConfig(model=args.model, gallery=str(folder), cache_dir=str(work / "cache"), device="cpu"))
    print(f"machine: {machine()}\nfolder: {args.n} JPEGs, {mb:.0f} MB (made in {made:.0f} s)\nmodel: {args.model}\n")

    (gallery, first), t_first = timed(lambda: engine.open_gallery(folder))  # cold: a fresh store
    again, t_again = timed(gallery.sync)
    files = sorted(folder.glob("*.jpg"))
    for i, path in enumerate(files[:10]):
        render(make_scene("val", i), size=400, supersample=1).save(path, quality=88)
    touched, t_touched = timed(gallery.sync)
    for path in files[10:20]:
        path.unlink()
    deleted, t_deleted = timed(gallery.sync)

    queries = [f"a {c} {s}" for c in COLOURS for s in SHAPES][: args.queries]
    engine.search(queries[0])  # warm
    lat = []
    for q in queries:
        _, t = timed(lambda q=q: engine.search(q, k=10))
        lat.append(t * 1000)
    lat.sort()

    print("| step | seconds | images encoded | note |\n|---|---:|---:|---|")
    print(f"| first sync | {t_first:.2f} | {first.encoded} | {first.encoded / t_first:.1f} images/s |")
    print(f"| re-sync, nothing changed | {t_again:.3f} | {again.encoded} | {t_again / t_first:.2%} of the first |")
    print(f"| re-sync, 10 files rewritten | {t_touched:.3f} | {touched.encoded} | changed={touched.changed} |")
    print(f"| re-sync, 10 files deleted | {t_deleted:.3f} | {deleted.encoded} | removed={deleted.removed}, "
          f"items now {len(gallery)} |")
    p95 = lat[min(len(lat) - 1, int(0.95 * len(lat)))]
    print(f"\ntext query end to end (encode + FAISS + rows), {len(lat)} queries over {len(gallery)} images: "
          f"p50 {statistics.median(lat):.1f} ms, p95 {p95:.1f} ms; index {gallery.index!r}")
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
