"""Take the README's screenshots of a running page, one per tab: `python docs/screenshot.py [URL] [FOLDER]`.

Start the app first (`python app.py`); this opens each tab at 1366 x 800 (a projector's width), gives it something
to show (a search, a classified example, the Explore views), and saves `FOLDER/screenshot-<tab>.png` (default
`docs/`), reduced to 256 colours so each stays small. Uses Debian's Chromium through Playwright, as the browser
tests do.
"""

import sys
from pathlib import Path

from PIL import Image
from playwright.sync_api import expect, sync_playwright

VIEWPORT = {"width": 1366, "height": 800}
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]


def search(page):
    box = page.get_by_label("Text", exact=True)
    box.fill("a red circle")
    box.press("Enter")
    expect(page.locator("#results img")).to_have_count(12, timeout=30_000)


def classify(page):
    page.locator("#classify-examples tbody tr").first.click()
    expect(page.locator("#per-template")).to_contain_text("a photo of a {}.", timeout=30_000)


def explore(page):
    expect(page.locator("#embedding-map svg.mbm-map circle").first).to_be_attached(timeout=60_000)


def learn(page):
    page.locator("#trace-run").click()
    expect(page.locator("#trace-answer")).to_contain_text("attention", timeout=30_000)


PREPARE = {"search": search, "classify": classify, "explore": explore, "gallery": None, "learn": learn,
           "model": None}  # tab -> what to do in it before the picture


def shoot(page, tab: str, out: Path) -> None:
    page.get_by_role("tab", name=tab.capitalize()).click()
    if PREPARE[tab]:
        PREPARE[tab](page)
    page.wait_for_timeout(800)  # images and transitions settle
    page.get_by_role("tablist").first.evaluate("bar => window.scrollTo(0, bar.getBoundingClientRect().top + "
                                               "window.scrollY - 8)")  # the tabs at the top: more of the tab shows
    page.screenshot(path=out)
    Image.open(out).convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT).save(out, optimize=True)
    print(f"saved {out} ({out.stat().st_size // 1024} KB)")


def main(url: str = "http://127.0.0.1:7860/", folder: str = "docs") -> None:
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=FLAGS)
        page = browser.new_page(viewport=VIEWPORT)
        page.goto(url)
        expect(page.locator("#header")).to_contain_text("Serving", timeout=60_000)
        for tab in PREPARE:
            shoot(page, tab, Path(folder) / f"screenshot-{tab}.png")
        browser.close()


if __name__ == "__main__":
    main(*sys.argv[1:3])
