"""Start-up and Search latency of the page, as a visitor meets them.

    python benchmarks/bench_page.py [--starts 3] [--queries 50] [--model mbm-shapes]

Cold start: `python app.py` in a fresh process until the page answers HTTP and then until its first
`/search` answers, with the gallery store already cached (`warm cache`, the usual case) and, once, with an
empty cache (the very first start, which indexes the built-in gallery). Then `/search` through
`gradio_client` for `--queries` text queries: p50/p95 of the round trip, without and with the client
downloading the result images (it fetches them one request at a time; a browser fetches them in parallel).
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
QUERIES = [f"a {c} {s}" for c in ("red", "blue", "green", "yellow", "purple") for s in
           ("circle", "square", "triangle", "star", "hexagon", "cross", "diamond", "heart", "shape", "thing")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cache: Path, model: str) -> tuple[subprocess.Popen, str, float, float]:
    """Start the app; returns (process, url, seconds to HTTP 200, seconds to the first /search answer)."""
    from gradio_client import Client
    port = free_port()
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "app.py", "--port", str(port), "--model", model], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "MBM_CACHE": str(cache), "HF_HUB_OFFLINE": "1",
                                 "GRADIO_ANALYTICS_ENABLED": "False"})
    url = f"http://127.0.0.1:{port}/"
    while True:
        try:
            urllib.request.urlopen(url, timeout=1)
            break
        except OSError:
            if proc.poll() is not None:
                raise SystemExit("app.py exited during start-up") from None
            time.sleep(0.05)
    t_http = time.perf_counter() - t0
    Client(url, verbose=False).predict("a red circle", None, 1.0, 12, 0.0, api_name="/search")
    return proc, url, t_http, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--starts", type=int, default=3)
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--model", default="mbm-shapes")
    args = parser.parse_args()
    from gradio_client import Client
    cache = Path(tempfile.mkdtemp(prefix="mbm-bench-page-"))
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
          f"model {args.model}\n")
    rows = []
    for i in range(args.starts + 1):  # the first start has an empty cache
        proc, url, t_http, t_search = start(cache, args.model)
        rows.append((i == 0, t_http, t_search))
        if i < args.starts:
            proc.terminate()
            proc.wait(timeout=30)
    lat = {}
    for download in (False, True):  # the answer alone, and with the 12 result images fetched one by one
        client, lat[download] = Client(url, verbose=False, download_files=download), []
        for q in (QUERIES * 10)[: args.queries]:
            t = time.perf_counter()
            client.predict(q, None, 1.0, 12, 0.0, api_name="/search")
            lat[download].append((time.perf_counter() - t) * 1000)
    proc.terminate()
    proc.wait(timeout=30)
    warm = [r for r in rows if not r[0]]
    print("| start | page answers HTTP (s) | first /search answered (s) |\n|---|---:|---:|")
    print(f"| first ever (empty cache: indexes the gallery) | {rows[0][1]:.2f} | {rows[0][2]:.2f} |")
    print(f"| cached gallery, median of {len(warm)} | {statistics.median(r[1] for r in warm):.2f} | "
          f"{statistics.median(r[2] for r in warm):.2f} |")
    print(f"\n/search through gradio_client, {args.queries} text queries, k=12, built-in gallery:")
    for download, ms in lat.items():
        ms.sort()
        what = "answer and the 12 result images downloaded" if download else "answer (download_files=False)"
        print(f"- {what}: p50 {statistics.median(ms):.0f} ms, p95 {ms[int(0.95 * (len(ms) - 1))]:.0f} ms")


if __name__ == "__main__":
    main()
