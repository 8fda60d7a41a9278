"""How long each Explore and Learn view takes to render, as a visitor meets it.

    python benchmarks/bench_explore.py [--repeats 7]

Starts `python app.py` (mbm-shapes, built-in gallery, a fresh cache), then:
1. through `gradio_client`, each view's named endpoint: the first call (cold: fits, index builds, thumbnails)
   and the median of `--repeats` more with a changed input each time;
2. in headless Chromium (Debian's, through Playwright), the time from an input change to the redrawn view,
   which adds the browser's drawing: opening the Explore tab (all four views), a new map query, the softmax
   toggle, a new index knob, new prompt-lab labels, and the walk-through.
The bar (issue 6): every view renders for the built-in gallery in < 2 s on this CPU.
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_page import ROOT, start  # noqa: E402

EXAMPLE = ROOT / "assets" / "examples" / "red-circle.png"
QUERIES = ["a red circle", "a green star", "a blue square", "a yellow heart", "a purple hexagon", "a black cross",
           "a white diamond", "a pink triangle"]


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def endpoints(url: str, repeats: int) -> list[tuple[str, float, float]]:
    """(view, first call s, median of the next `repeats` s) through gradio_client."""
    from gradio_client import Client, handle_file
    client = Client(url, verbose=False, download_files=False)
    image = handle_file(str(EXAMPLE))
    calls = {
        "embedding map": lambda i: client.predict(QUERIES[i % 8], 10, "pca", api_name="/embedding_map"),
        "similarity matrix": lambda i: client.predict(8, i, i % 2 == 1, api_name="/similarity_matrix"),
        "exact vs approximate": lambda i: client.predict(QUERIES[i % 8], 10, "ivf", 1 + i % 16,
                                                         api_name="/compare_indexes"),
        "prompt lab": lambda i: client.predict(image, f"red, green, blue, {QUERIES[i % 8].split()[1]}",
                                               "a photo of a {}.\na {}.", api_name="/prompt_lab"),
        "how it works": lambda i: client.predict(image, QUERIES[i % 8], api_name="/pipeline_trace"),
    }
    rows = []
    for name, call in calls.items():
        times = [timed(functools.partial(call, i)) for i in range(repeats + 1)]
        rows.append((name, times[0], statistics.median(times[1:])))
    return rows


def browser(url: str, repeats: int) -> list[tuple[str, float]]:
    """(interaction, median seconds from the input change to the redrawn view) in Chromium."""
    from playwright.sync_api import sync_playwright
    flags = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]
    out: dict[str, list[float]] = {}
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path="/usr/bin/chromium", args=flags)
        for i in range(repeats):
            visit(chromium, url, i, out)
        chromium.close()
    return [(what, statistics.median(ts)) for what, ts in out.items()]


def visit(chromium, url: str, i: int, out: dict[str, list[float]]) -> None:
    """One visitor: open the page, then each view's interaction, timed until the view shows the change."""
    from playwright.sync_api import expect
    page = chromium.new_page(viewport={"width": 1280, "height": 1000})
    page.goto(url)
    expect(page.locator("#header")).to_contain_text("mbm", timeout=60_000)
    long = {"timeout": 60_000}

    def until(what: str, act, check):
        t = time.perf_counter()
        act()
        check()
        out.setdefault(what, []).append(time.perf_counter() - t)

    until("open Explore (all four views drawn)", lambda: page.get_by_role("tab", name="Explore").click(),
          lambda: (expect(page.locator("#embedding-map svg.mbm-map g.query")).to_be_attached(**long),
                   expect(page.locator("#similarity-matrix svg.mbm-heat rect.cell").first).to_be_attached(**long),
                   expect(page.locator("#index-note")).to_contain_text("recall", **long),
                   expect(page.locator("#prompt-table svg.mbm-heat")).to_contain_text("ensemble", **long)))
    box = page.locator("#map-query textarea, #map-query input").first
    query = QUERIES[1 + i % 7]
    until("map: a new query", lambda: (box.fill(query), box.press("Enter")),
          lambda: expect(page.locator("#embedding-map g.query")).to_contain_text(query, **long))
    until("matrix: softmax toggled", lambda: page.locator("#matrix-softmax input").check(),
          lambda: expect(page.get_by_text("softmax over each row")).to_be_visible(**long))
    until("index: HNSW instead of IVF", lambda: page.locator("#index-kind").get_by_text("hnsw").click(),
          lambda: expect(page.locator("#index-note")).to_contain_text("efSearch", **long))
    labels = page.locator("#lab-labels textarea, #lab-labels input").first
    until("prompt lab: new labels", lambda: (labels.fill(f"circle, square, heart{i}"), labels.press("Enter")),
          lambda: expect(page.locator("#prompt-table svg.mbm-heat")).to_contain_text(f"heart{i}", **long))
    page.get_by_role("tab", name="Learn").click()
    until("how it works: run it through", lambda: page.locator("#trace-run").click(),
          lambda: expect(page.locator("#trace-vectors svg.mbm-vector").first).to_be_attached(**long))
    page.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    cache = Path(tempfile.mkdtemp(prefix="mbm-bench-explore-"))
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
          "model mbm-shapes, built-in gallery\n")
    proc, url, _, _ = start(cache, "mbm-shapes")
    try:
        rows = endpoints(url, args.repeats)
        clicks = browser(url, max(3, args.repeats // 2))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    print(f"| view (gradio_client round trip) | first call (s) | median of {args.repeats} (s) |\n|---|---:|---:|")
    for name, first, median in rows:
        print(f"| {name} | {first:.3f} | {median:.3f} |")
    print("\n| in Chromium: input change to redrawn view | median (s) |\n|---|---:|")
    for what, median in clicks:
        print(f"| {what} | {median:.2f} |")


if __name__ == "__main__":
    main()
