"""Take the README's screenshot of a running page: `python docs/screenshot.py [URL] [OUT]`.

Start the app first (`python app.py`); this types a query, waits for the results and saves a PNG.
Uses Debian's Chromium through Playwright, as the browser tests do.
"""

import sys

from playwright.sync_api import sync_playwright

url = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:7860/"
out = sys.argv[2] if len(sys.argv) > 2 else "docs/screenshot.png"
with sync_playwright() as p:
    browser = p.chromium.launch(executable_path="/usr/bin/chromium",
                                args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
    page = browser.new_page(viewport={"width": 1280, "height": 1100})
    page.goto(url)
    page.get_by_label("Text", exact=True).fill("a red circle")
    page.get_by_role("button", name="Search", exact=True).click()
    page.locator("#results img").first.wait_for(timeout=30_000)
    page.locator("#histogram svg").wait_for(timeout=30_000)
    page.wait_for_timeout(1000)
    page.screenshot(path=out, full_page=True)
    browser.close()
print(f"saved {out}")
