"""Live training as the Learn tab runs it: held-out quality within the time budget, and searches meanwhile.

    python benchmarks/bench_live.py [--seconds 120] [--seeds 0 1 2] [--threads N] [--nice 5] [--server-threads N]

For each seed, one full `LiveTraining` with the page's settings, timed from the moment it is requested (child
start-up included): text->image R@1/R@5 on the held-out sample (`test` scenes 0..199 against their captions) at
the end, and when R@5 first reached 50% (the bar of the issue). Meanwhile the main process runs text searches on
the built-in gallery with the shipped model, as other visitors would; their latency is compared with an idle
machine. `--server-threads` sets the searching process's torch threads: with torch's default (one per core) its
parallel regions wait for the core the child holds, and the tail latency shows it. Finally the last run's model
searches the gallery in memory (`embed_gallery`, `search_with`).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from benchmarks._synthetic import machine  # noqa: E402
from mbm.engine import Engine, EngineConfig  # noqa: E402
from mbm.evaluate import retrieval  # noqa: E402
from mbm.train.live import HELDOUT_N, LIVE_MAX_SECONDS, LiveTraining, embed_gallery, search_with  # noqa: E402

BAR = 0.50
QUERIES = [f"a {c} {s}" for c in ("red", "blue", "green", "yellow", "purple") for s in
           ("circle", "square", "triangle", "star", "hexagon", "cross", "diamond", "heart")]


def search_latency(engine: Engine, until, pause: float = 0.05) -> list[float]:
    """Milliseconds per `engine.search`, one query every `pause` s, until `until()` says stop."""
    lat, i = [], 0
    while not until():
        t = time.perf_counter()
        engine.search(QUERIES[i % len(QUERIES)], k=10)
        lat.append((time.perf_counter() - t) * 1000)
        i += 1
        time.sleep(pause)
    return lat


def pct(lat: list[float], q: float) -> float:
    s = sorted(lat)
    return s[min(len(s) - 1, int(q * len(s)))]


def one_run(engine: Engine, seconds: float, seed: int, threads: int | None, nice: int) -> dict:
    """Train with searches going on; returns the numbers of the run and the searches' latencies."""
    out: dict = {"updates": []}
    requested = time.monotonic()
    run = LiveTraining(seconds, seed=seed, threads=threads, nice=nice)

    def consume():
        out["updates"] = list(run.updates())
        out["wall"] = time.monotonic() - requested
    worker = threading.Thread(target=consume)
    worker.start()
    lat = search_latency(engine, lambda: not worker.is_alive())
    worker.join()
    evaluated = [u for u in out["updates"] if u.recall]
    first = next((u.seconds for u in evaluated if u.recall["t2i_r5"] >= BAR), None)
    last = out["updates"][-1]
    return dict(run=run, seed=seed, steps=last.step, wall=out["wall"], start_up=out["updates"][0].seconds,
                r5=last.recall["t2i_r5"], r1=last.recall["t2i_r1"], first=first, lat=lat)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=LIVE_MAX_SECONDS)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=None, help="torch threads in the child (default: cores - 1)")
    parser.add_argument("--nice", type=int, default=5)
    parser.add_argument("--server-threads", type=int, default=None,
                        help="torch threads of the searching process (default: torch's, one per core)")
    args = parser.parse_args()
    if args.server_threads:
        import torch
        torch.set_num_threads(args.server_threads)
    with tempfile.TemporaryDirectory(prefix="mbm-bench-live-") as cache:
        engine = Engine(EngineConfig(model="mbm-shapes", cache_dir=cache, device="cpu"))
        threads = LiveTraining(1, threads=args.threads).threads
        print(f"machine: {machine()}\nlive child: {threads} torch thread(s), nice {args.nice}; "
              f"gallery: {len(engine.gallery)} images, searched with {engine.encoder.name}\n")
        engine.search(QUERIES[0])  # warm
        stop = time.monotonic() + 10
        idle = search_latency(engine, lambda: time.monotonic() > stop)

        print(f"| seed | steps | start-up s | end s | t2i R@5 | t2i R@1 | R@5 >= {BAR:.0%} at s | "
              "search p50 / p95 / max ms |\n|---|---:|---:|---:|---:|---:|---:|---|")
        runs = []
        for seed in args.seeds:
            r = one_run(engine, args.seconds, seed, args.threads, args.nice)
            runs.append(r)
            first = f"{r['first']:.1f}" if r["first"] is not None else "never"
            print(f"| {seed} | {r['steps']} | {r['start_up']:.1f} | {r['wall']:.1f} | {r['r5']:.1%} | {r['r1']:.1%} "
                  f"| {first} | {statistics.median(r['lat']):.1f} / {pct(r['lat'], 0.95):.1f} / {max(r['lat']):.1f} |",
                  flush=True)
        firsts = [r["first"] for r in runs if r["first"] is not None]
        print(f"| median | {statistics.median(r['steps'] for r in runs):.0f} | "
              f"{statistics.median(r['start_up'] for r in runs):.1f} | {statistics.median(r['wall'] for r in runs):.1f}"
              f" | {statistics.median(r['r5'] for r in runs):.1%} | {statistics.median(r['r1'] for r in runs):.1%} | "
              f"{statistics.median(firsts) if len(firsts) == len(runs) else float('nan'):.1f} | |")
        print(f"\nsearch while idle, {len(idle)} queries: p50 {statistics.median(idle):.1f} ms, "
              f"p95 {pct(idle, 0.95):.1f} ms, max {max(idle):.1f} ms")
        busy = [x for r in runs for x in r["lat"]]
        print(f"search while training, {len(busy)} queries: p50 {statistics.median(busy):.1f} ms, "
              f"p95 {pct(busy, 0.95):.1f} ms, max {max(busy):.1f} ms")

        shipped = retrieval(engine.encoder, "test", HELDOUT_N)
        print(f"\nshipped model on the same held-out sample: t2i R@5 {shipped['t2i_r5']:.1%}, "
              f"R@1 {shipped['t2i_r1']:.1%}")
        mine = runs[-1]["run"].encoder()
        t = time.perf_counter()
        embedded = embed_gallery(mine, engine.gallery)
        t_embed = time.perf_counter() - t
        t = time.perf_counter()
        for q in QUERIES:
            search_with(mine, engine.gallery, q, k=10, embedded=embedded)
        t_search = (time.perf_counter() - t) / len(QUERIES) * 1000
        print(f"the last run's model: embeds the built-in gallery ({len(embedded[0])} images) in {t_embed:.2f} s, "
              f"then searches it in {t_search:.1f} ms a query")


if __name__ == "__main__":
    main()
