"""Start-up and Search latency of the page, as a visitor meets them.

    python benchmarks/bench_page.py [--starts 5] [--queries 50] [--model mbm-shapes] [--baseline DIR]

Cold start: `python app.py` in a fresh process until the page answers HTTP and then until its first
`/search` answers through `gradio_client` (a new client: it reads the page's API first, as a script does).
Each round starts it twice: first with an empty cache (a fresh install's first start: the built-in gallery is
synced from its shipped vectors), then with that cache (the usual start); and, before them, a bare
`python -c "import gradio, torch, open_clip, faiss"`, the floor any such page stands on. Reported: medians of
the rounds and the ratio of each start to the bare import (issue 18's bar: a first start within 1.25x). The
app's own log line ("page served in ...") gives the breakdown: imports, model, gallery, page (building the
Blocks), server (launch).

`--baseline DIR` also starts `DIR/app.py` (another checkout, e.g. `git archive <commit> | tar -x -C DIR`),
interleaved with this one start by start, so that both are measured under the same load; each gets its own
cache. Then `/search` through `gradio_client` for `--queries` text queries: p50/p95 of the round trip,
without and with the client downloading the result images (it fetches them one request at a time; a
browser fetches them in parallel).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _synthetic import cpu_name, start_app, stop_app  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
QUERIES = [f"a {c} {s}" for c in ("red", "blue", "green", "yellow", "purple") for s in
           ("circle", "square", "triangle", "star", "hexagon", "cross", "diamond", "heart", "shape", "thing")]
SERVED = re.compile(r"page served in ([\d.]+) s since app.py started \((.*?)(?:; CPU time ([\d.]+) s)?\)")
PHASE = re.compile(r"(\w+) ([\d.]+) s")


def machine() -> str:
    """CPU, threads and versions, without importing torch here (this process only measures the app's)."""
    versions = ", ".join(f"{p} {importlib.metadata.version(p)}" for p in ("torch", "open_clip_torch", "gradio"))
    return f"{cpu_name()}, {os.cpu_count()} CPU threads, Python {platform.python_version()}, {versions}"


def load() -> str:
    try:
        return "load average " + " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "load average unknown"


def cpu_seconds(pid: int) -> float | None:
    """CPU time (user + system, all threads) a process has used so far; None where /proc is missing."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def start(root: Path, cache: Path, model: str) -> tuple[subprocess.Popen, str, dict]:
    """Start `root/app.py`; returns (process, url, {"http": s, "cpu": s, "search": s, "phases": {..} or None}),
    where "http" is the seconds to the page's HTTP 200, "cpu" the CPU seconds app.py had used by then (less
    sensitive to other load on the machine than the wall clock) and "search" the seconds to the first /search
    answer."""
    from gradio_client import Client
    log = cache / "app.log"
    proc, url, t_http = start_app(["--model", model], cache, log, root=root)
    cpu = cpu_seconds(proc.pid)
    t0 = time.perf_counter()
    Client(url, verbose=False).predict("a red circle", None, 1.0, 12, 0.0, api_name="/search")
    t_search = t_http + time.perf_counter() - t0
    served = None
    for _ in range(50):  # the log line follows launch(), which returns just after the server answers
        served = SERVED.search(log.read_text())
        if served or proc.poll() is not None:
            break
        time.sleep(0.1)
    phases = None
    if served:
        phases = {"in process": float(served[1]), **{k: float(v) for k, v in PHASE.findall(served[2])}}
        if served[3]:
            phases["CPU time"] = float(served[3])  # of app.py, all threads: near "in process" when not contended
    return proc, url, {"http": t_http, "cpu": cpu, "search": t_search, "phases": phases}


BARE = "import gradio, torch, open_clip, faiss"


def bare_import() -> float:
    """Wall seconds of a fresh Python that imports what the page needs and exits, as app.py's start is timed."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", BARE], check=True, env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"})
    return time.perf_counter() - t0


def spread(values: list[float | None]) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "n/a"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def report(name: str, runs: list[dict], bare: float) -> None:
    for kind, what in (("first", "first start (empty cache)"), ("cached", "cached gallery")):
        rows = [r[kind] for r in runs]
        ratio = statistics.median(r["search"] for r in rows) / bare
        print(f"| {name}: {what}, median of {len(rows)} (min-max) | {spread([r['http'] for r in rows])} | "
              f"{spread([r['cpu'] for r in rows])} | {spread([r['search'] for r in rows])} | {ratio:.2f}x |")


def breakdown(name: str, runs: list[dict]) -> None:
    phases = [r["cached"]["phases"] for r in runs if r["cached"]["phases"]]
    if not phases:
        print(f"- {name}: no breakdown (its app.py does not log one)")
        return
    keys = list(phases[0])
    print(f"- {name}, median of {len(phases)} cached starts: "
          + ", ".join(f"{k} {statistics.median(p[k] for p in phases if k in p):.2f} s" for k in keys))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--starts", type=int, default=5, help="rounds: a bare import, a first and a cached start")
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--model", default="mbm-shapes")
    parser.add_argument("--baseline", type=Path, default=None, help="another checkout to start, interleaved")
    args = parser.parse_args()
    from gradio_client import Client
    # "this" starts last in each round, so that its final start can stay up for the latency part
    roots = {**({"baseline": args.baseline.resolve()} if args.baseline else {}), "this": ROOT}
    caches = {name: Path(tempfile.mkdtemp(prefix=f"mbm-bench-page-{name}-")) for name in roots}
    print(f"machine: {machine()}; model {args.model}")
    print(f"before: {load()}\n")
    runs: dict[str, list[dict]] = {name: [] for name in roots}
    bare: list[float] = []
    for i in range(args.starts):
        bare.append(bare_import())
        for name, root in roots.items():
            shutil.rmtree(caches[name], ignore_errors=True)
            caches[name].mkdir()
            run = {}
            for kind in ("first", "cached"):
                proc, url, run[kind] = start(root, caches[name], args.model)
                if not (i == args.starts - 1 and name == "this" and kind == "cached"):
                    stop_app(proc)
            runs[name].append(run)
    lat = {}
    for download in (False, True):  # the answer alone, and with the 12 result images fetched one by one
        client, lat[download] = Client(url, verbose=False, download_files=download), []
        for q in (QUERIES * 10)[: args.queries]:
            t = time.perf_counter()
            client.predict(q, None, 1.0, 12, 0.0, api_name="/search")
            lat[download].append((time.perf_counter() - t) * 1000)
    stop_app(proc)
    floor = statistics.median(bare)
    print(f"bare `{BARE}` in a fresh Python: median {spread(bare)} s\n")
    print("| start | page answers HTTP (s) | app.py's CPU time by then (s) | first /search answered (s) | "
          "/ bare import |\n|---|---:|---:|---:|---:|")
    for name in reversed(roots):
        report(name, runs[name], floor)
    print("\nWhere a start goes (the app's own log line; 'in process' is from app.py's first line to the server "
          "answering, so the HTTP time above adds the interpreter's own start):")
    for name in reversed(roots):
        breakdown(name, runs[name])
    if args.baseline:
        med = lambda name, key: statistics.median(r["cached"][key] for r in runs[name])
        ratios = [f"{what} {med('baseline', key) / med('this', key):.2f}x" for key, what in
                  (("http", "page answers HTTP"), ("search", "first /search answered"), ("cpu", "CPU time"))
                  if all(r["cached"][key] is not None for r in runs["baseline"] + runs["this"])]
        print(f"- baseline / this, medians of the cached starts: {', '.join(ratios)}")
    print(f"\n/search through gradio_client, {args.queries} text queries, k=12, built-in gallery:")
    for download, ms in lat.items():
        ms.sort()
        what = "answer and the 12 result images downloaded" if download else "answer (download_files=False)"
        print(f"- {what}: p50 {statistics.median(ms):.0f} ms, p95 {ms[int(0.95 * (len(ms) - 1))]:.0f} ms")
    print(f"\nafter: {load()}")
    for cache in caches.values():
        shutil.rmtree(cache, ignore_errors=True)


if __name__ == "__main__":
    main()
