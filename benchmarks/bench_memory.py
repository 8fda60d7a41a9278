"""Peak memory (RSS) of the app with each model, on the built-in gallery and on a 100k-item gallery.

    python benchmarks/bench_memory.py [--items 100000] [--models mbm-shapes,ViT-B-32] [--searches 10]

Each row starts `python app.py --model SPEC [--gallery DIR]` in a fresh process with its own `MBM_CACHE`,
waits until the page answers, runs `--searches` text queries through `gradio_client` (`/search`, what the
Search tab's button sends, and `/search_items`), then reads the process's peak and current resident memory
(`VmHWM` and `VmRSS` in /proc/PID/status; Linux only). Rows per model:
- the built-in gallery, first start: an empty cache, so the start-up sync embeds its 307 images;
- the built-in gallery again with that cache (the usual start);
- a synthetic gallery of `--items` items: `benchmarks/_synthetic.make_gallery(files=True)` writes one tiny
  JPEG per item and fills the store at the path the app will use (`Engine.store_for`) with the items'
  rows and unit vectors under the app's encoder key, plus the saved FAISS index, so the app's start-up
  sync finds every file unchanged and embedded and encodes nothing (see that module's docstring). The
  vectors are isotropic random unit vectors: memory does not depend on their values.
`ViT-B-32` is served without a download: a bare open_clip architecture name means that model randomly
initialised (seeded; the real one's size), saved as safetensors in the work folder and passed as
`ViT-B-32:/that/file.safetensors` (`_synthetic.model_spec`).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _synthetic import machine, make_gallery, model_spec, start_app, stop_app, unit_vectors  # noqa: E402

QUERIES = ("a red circle", "a photo of a blue star.", "two shapes: a green square and a yellow heart",
           "something purple.", "a large white cross at the bottom")


@dataclass
class Row:
    model: str
    gallery: str
    items: int
    start_s: float
    rss_start_mb: float
    peak_mb: float
    rss_end_mb: float
    search_ms: float
    sync: str = ""  # the app's own log line of its start-up sync



def memory_mb(pid: int) -> dict[str, float]:
    """`{"VmRSS": MB, "VmHWM": MB}` of a live process, from /proc (Linux)."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) / 1024  # kB -> MB
    return out


def synthetic_gallery(work: Path, cache: Path, spec: str, items: int) -> Path:
    """`items` tiny JPEGs in a folder, and the store the app will open for it under `cache`, pre-filled."""
    from mbm.engine import Engine, EngineConfig
    engine = Engine(EngineConfig(model=spec, cache_dir=str(cache)))  # the app's settings, so the app's key
    encoder, folder = engine.encoder, work / f"gallery-{items}"
    store = engine.store_for(folder)
    x = unit_vectors("isotropic", items, encoder.embed_dim, seed=items)
    if folder.is_dir():  # the JPEGs of an earlier model: write only the store
        shutil.rmtree(folder)
    gallery = make_gallery(folder, encoder, x, store=store, files=True)
    gallery.index  # noqa: B018 - build and save the index the app would otherwise build at start
    gallery.close()
    return folder


def run_app(spec: str, gallery: Path | None, cache: Path, searches: int, timeout: float, log: Path) -> Row:
    """Start the app, wait for the page, search, read its memory, stop it."""
    from gradio_client import Client
    proc, url, start_s = start_app(["--model", spec, *(["--gallery", str(gallery)] if gallery else [])], cache, log,
                                   timeout=timeout)
    try:
        rss_start = memory_mb(proc.pid)["VmRSS"]
        client = Client(url, verbose=False, download_files=False)
        lat = []
        for i in range(searches):
            q = QUERIES[i % len(QUERIES)]
            t = time.perf_counter()
            client.predict(q, None, 1.0, 12, 0.0, api_name="/search")
            lat.append((time.perf_counter() - t) * 1000)
            client.predict(q, 12, 0.0, api_name="/search_items")
        mem = memory_mb(proc.pid)
    finally:
        stop_app(proc)
    synced = [line.strip() for line in log.read_text(errors="replace").splitlines() if "synced" in line]
    return Row(spec, "", 0, start_s, rss_start, mem["VmHWM"], mem["VmRSS"],
               statistics.median(lat) if lat else float("nan"), synced[0] if synced else "(no sync line logged)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100_000, help="items in the synthetic gallery")
    parser.add_argument("--models", default="mbm-shapes,ViT-B-32",
                        help="model specs; a bare open_clip architecture (ViT-B-32) means random weights")
    parser.add_argument("--searches", type=int, default=10, help="/search calls per row")
    parser.add_argument("--timeout", type=float, default=900, help="seconds to wait for a page to answer")
    parser.add_argument("--workdir", default=None, help="where caches and galleries go (default: a temp folder)")
    args = parser.parse_args()
    if not Path("/proc/self/status").is_file():
        raise SystemExit("this benchmark reads /proc/PID/status: it runs on Linux")
    work = Path(tempfile.mkdtemp(prefix="mbm-bench-memory-", dir=args.workdir))
    log = work / "app.log"
    from mbm.data.images import IMAGE_SUFFIXES
    from mbm.engine import BUILTIN_GALLERY
    builtin = sum(1 for p in BUILTIN_GALLERY.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    print(f"machine: {machine()}\n", flush=True)
    rows = []
    try:
        for model in args.models.split(","):
            spec = model_spec(model, work)
            name = f"{model} (random weights)" if spec != model else model
            cache = work / f"cache-{len(rows)}"
            for label in ("built-in, first start", "built-in, cached"):
                row = run_app(spec, None, cache, args.searches, args.timeout, log)
                row.model, row.gallery, row.items = name, f"{label} ({builtin} images)", builtin
                rows.append(row)
                print(f"  {row}", flush=True)
            cache = work / f"cache-{len(rows)}"
            t0 = time.perf_counter()
            folder = synthetic_gallery(work, cache, spec, args.items)
            print(f"  {args.items:,}-item gallery made in {time.perf_counter() - t0:.0f} s", flush=True)
            row = run_app(spec, folder, cache, args.searches, args.timeout, log)
            row.model, row.gallery, row.items = name, f"synthetic, {args.items:,} items", args.items
            rows.append(row)
            print(f"  {row}", flush=True)
            if f"{args.items} unchanged; 0 images encoded" not in row.sync:
                print(f"  WARNING: the app did not take the synthetic gallery as it was: {row.sync}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\n{args.searches} text queries per row through gradio_client; MB = 2^20 bytes\n")
    print("| model | gallery | page answers (s) | RSS then (MB) | peak RSS (MB) | RSS after the searches (MB) "
          "| /search p50 (ms) |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r.model} | {r.gallery} | {r.start_s:.1f} | {r.rss_start_mb:.0f} | {r.peak_mb:.0f} "
              f"| {r.rss_end_mb:.0f} | {r.search_ms:.0f} |")


if __name__ == "__main__":
    main()
