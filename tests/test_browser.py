"""The page in a real headless Chromium (Debian's, driven by Playwright), as a person uses it."""

import re
import time
from pathlib import Path

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from playwright.sync_api import expect, sync_playwright

from mbm.explore import available_methods
from mbm.models._registry import EMBEDDED

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
# This machine has no network: without these, Chromium keeps trying to reach Google's services.
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield browser
        browser.close()


@pytest.fixture()
def page(browser, server):
    """A fresh visitor (own context, own session) on the page, with the console watched for errors."""
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(f"uncaught: {e}"))
    page.on("console", lambda m: errors.append(f"console: {m.text}") if m.type == "error" else None)
    page.goto(server.url)
    expect(page.locator("#header")).to_contain_text(EMBEDDED, timeout=30_000)
    page.errors = errors
    yield page
    context.close()


def test_typing_a_query_shows_results_a_histogram_and_the_time(page):
    page.get_by_label("Text", exact=True).fill("a red circle")
    page.get_by_role("button", name="Search", exact=True).click()
    results = page.locator("#results img")
    expect(results.first).to_be_visible(timeout=20_000)
    assert results.count() == 12
    expect(page.locator("#results")).to_contain_text("red circle")
    expect(page.locator("#histogram svg rect").first).to_be_attached()
    expect(page.get_by_text("images (text query) in")).to_be_visible()
    assert page.errors == []


def test_clicking_a_result_searches_for_more_like_it(page):
    page.get_by_label("Text", exact=True).fill("a green star")
    page.get_by_label("Text", exact=True).press("Enter")
    first = page.locator("#results img").first
    expect(first).to_be_visible(timeout=20_000)
    first.click()
    expect(page.get_by_text("images like result 1")).to_be_visible(timeout=20_000)
    assert page.errors == []


def test_uploading_an_image_to_classify_shows_labels(page):
    page.get_by_role("tab", name="Classify").click()
    star = ROOT / "assets" / "examples" / "blue-star.png"
    page.locator("#classify-image input[type=file]").set_input_files(str(star))
    page.get_by_role("button", name="Classify", exact=True).click()
    expect(page.locator("#zero-shot")).to_contain_text("star", timeout=20_000)
    expect(page.locator("#per-template")).to_contain_text("a photo of a {}.")
    assert page.errors == []


def test_an_example_works_with_one_click(page):
    page.get_by_role("tab", name="Classify").click()
    page.locator("#classify-examples tbody tr").nth(1).click()  # the blue star, asked for its colour
    expect(page.locator("#zero-shot")).to_contain_text("blue", timeout=20_000)
    assert page.errors == []


def _draw_a_triangle(page, where: str) -> None:
    """Open the drawing under `where`, take the brush and draw a triangle with the mouse, as a visitor does."""
    page.locator(f"#{where}-draw").click()
    page.locator(f"#{where}-drawing button[aria-label='Brush']").click()
    box = page.locator(f"#{where}-drawing canvas").first.bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x - 60, y + 50)
    page.mouse.down()
    for dx, dy in ((0, -60), (60, 50), (-60, 50)):
        page.mouse.move(x + dx, y + dy, steps=12)
    page.mouse.up()


def test_a_drawing_made_with_the_mouse_is_searched_and_classified(page):
    _draw_a_triangle(page, "search")
    page.get_by_role("button", name="Search my drawing").click()
    expect(page.locator("#results img")).to_have_count(12, timeout=20_000)
    expect(page.get_by_text("(image query)")).to_be_visible()
    page.get_by_role("tab", name="Classify").click()
    _draw_a_triangle(page, "classify")
    page.get_by_role("button", name="Classify my drawing").click()
    expect(page.locator("#zero-shot")).to_contain_text("%", timeout=20_000)  # the shapes' probabilities


def test_an_empty_search_shows_a_message_not_a_traceback(page):
    page.get_by_role("button", name="Search", exact=True).click()
    expect(page.get_by_text("Type what you are looking for")).to_be_visible(timeout=20_000)
    assert "Traceback" not in page.content()


def test_uploads_are_indexed_and_removed_when_the_page_closes(page, server):
    page.get_by_role("tab", name="Gallery").click()
    photos = sorted((ROOT / "assets" / "gallery" / "photos").glob("*.jpg"))[:2]
    page.locator("#uploads input[type=file]").set_input_files([str(p) for p in photos])
    page.get_by_role("button", name="Index my uploads").click()
    expect(page.get_by_text("2 searchable images")).to_be_visible(timeout=30_000)
    expect(page.locator("#gallery-info")).to_contain_text("your uploads")
    sessions = [p for p in (server.cache / "sessions").glob("*/*") if p.is_dir()]  # sessions/<app's space>/<one>
    mine = {p for p in sessions if sorted(x.name for x in (p / "images").iterdir()) == sorted(p.name for p in photos)}
    assert len(mine) == 1
    page.close()
    deadline = time.time() + 30
    while any(p.exists() for p in mine) and time.time() < deadline:
        time.sleep(0.2)
    assert not any(p.exists() for p in mine), "the session's uploads outlived the page"


# ---------------------------------------------------------------- Explore: each view opens, draws and reacts
def _open_explore(page):
    page.get_by_role("tab", name="Explore").click()
    expect(page.locator("#embedding-map svg.mbm-map circle").first).to_be_attached(timeout=30_000)


def test_the_embedding_map_draws_both_clouds_and_follows_the_query(page):
    _open_explore(page)
    the_map = page.locator("#embedding-map svg.mbm-map")
    assert the_map.locator("g.pt[data-kind=image]").count() > 300
    assert the_map.locator("g.pt[data-kind=caption]").count() > 300
    expect(the_map.locator("g.query")).to_contain_text("a red circle")
    expect(page.locator("#modality-gap")).to_contain_text("its own caption")
    box = page.locator("#map-query textarea, #map-query input").first
    box.fill("a green star")
    box.press("Enter")
    expect(the_map.locator("g.query")).to_contain_text("a green star", timeout=20_000)
    hits = the_map.locator("g.pt circle.hit")
    assert hits.count() == 10
    assert page.errors == []


def test_the_similarity_matrix_draws_and_switches_to_softmax(page):
    _open_explore(page)
    cells = page.locator("#similarity-matrix svg.mbm-heat rect.cell")
    expect(cells.first).to_be_attached(timeout=30_000)
    assert cells.count() == 64  # 8 images x 8 captions
    expect(page.locator("#similarity-matrix")).to_contain_text("cosine")
    page.locator("#matrix-softmax input[type=checkbox]").check()
    expect(page.get_by_text("softmax over each row")).to_be_visible(timeout=20_000)
    assert page.errors == []


def test_exact_and_approximate_search_side_by_side(page):
    _open_explore(page)
    note = page.locator("#index-note")
    expect(note).to_contain_text("recall@10", timeout=30_000)
    expect(note).to_contain_text("nprobe = 1")
    expect(page.locator("#index-exact img").first).to_be_visible()
    assert page.locator("#index-exact img").count() == 10
    page.locator("#index-kind").get_by_text("hnsw").click()
    expect(note).to_contain_text("efSearch", timeout=20_000)
    assert page.errors == []


def test_the_prompt_lab_shows_every_template_and_reacts_to_new_labels(page):
    _open_explore(page)
    table = page.locator("#prompt-table svg.mbm-heat")
    expect(table).to_contain_text("a photo of a {}.", timeout=30_000)
    expect(table).to_contain_text("ensemble")
    expect(page.locator("#prompt-tokens")).to_contain_text("start_of_text")
    labels = page.locator("#lab-labels textarea, #lab-labels input").first
    labels.fill("circle, square, heart")
    labels.press("Enter")
    expect(table).to_contain_text("heart", timeout=20_000)
    assert page.errors == []


def test_explore_on_a_gallery_of_one_image_draws_what_it_can_and_says_why_not_the_rest(page):
    page.get_by_role("tab", name="Gallery").click()
    photo = ROOT / "assets" / "gallery" / "photos" / "coffee.jpg"
    page.locator("#uploads input[type=file]").set_input_files(str(photo))
    page.get_by_role("button", name="Index my uploads").click()
    expect(page.get_by_text("1 searchable images")).to_be_visible(timeout=30_000)
    _open_explore(page)
    the_map = page.locator("#embedding-map svg.mbm-map")
    assert the_map.locator("g.pt[data-kind=image]").count() == 1
    assert the_map.locator("g.pt[data-kind=caption]").count() == 1
    expect(page.get_by_text("no captions to pair")).to_be_visible(timeout=20_000)
    expect(page.locator("#index-note")).to_contain_text("recall@")
    assert "Traceback" not in page.content()
    assert page.errors == []


# ---------------------------------------------------------------- Learn
def test_training_live_streams_the_loss_and_then_searches_with_the_new_model(page):
    page.get_by_role("tab", name="Learn").click()
    seconds = page.locator("#train-seconds input[type=number]")
    seconds.fill("30")
    seconds.press("Enter")
    page.locator("#train").click()
    expect(page.locator("#loss-curve svg.mbm-curve polyline")).to_be_attached(timeout=60_000)
    expect(page.locator("#train-snapshot svg.mbm-heat rect.cell").first).to_be_attached(timeout=60_000)
    expect(page.locator("#train-status")).to_contain_text("done", timeout=90_000)
    page.locator("#compare").click()
    expect(page.locator("#compare-yours img").first).to_be_visible(timeout=30_000)
    assert page.locator("#compare-yours img").count() == 8
    assert page.locator("#compare-shipped img").count() == 8
    assert page.errors == []


def test_training_can_be_stopped(page):
    page.get_by_role("tab", name="Learn").click()
    page.locator("#train").click()
    expect(page.locator("#train-status")).to_contain_text("step", timeout=60_000)
    page.locator("#stop-training").click()
    expect(page.locator("#train-status")).to_contain_text("Stopped", timeout=30_000)
    page.locator("#train").click()  # a second start is told the time the first one took on this server
    expect(page.locator("#train-status")).to_contain_text(re.compile(r"about \d+ s on this server"), timeout=30_000)
    page.locator("#stop-training").click()
    expect(page.locator("#train-status")).to_contain_text("Stopped", timeout=30_000)
    page.locator("#compare").click()
    expect(page.get_by_text("Train your model first")).to_be_visible(timeout=20_000)
    _no_badges(page)
    assert page.errors == []


def test_the_walkthrough_shows_every_stage_and_follows_a_new_text(page):
    page.get_by_role("tab", name="Learn").click()
    page.locator("#trace-run").click()
    expect(page.locator("#trace-seen img")).to_be_visible(timeout=30_000)
    expect(page.locator("#trace-tokens")).to_contain_text("top")
    assert page.locator("#trace-vectors svg.mbm-vector").count() == 2
    expect(page.locator("#trace-colours svg.mbm-cells rect").first).to_be_attached()
    expect(page.locator("#trace-answer")).to_contain_text("attention")
    text = page.locator("#trace-text textarea, #trace-text input").first
    text.fill("a purple heart")
    page.locator("#trace-run").click()
    expect(page.locator("#trace-tokens")).to_contain_text("heart", timeout=20_000)
    assert page.errors == []


# ---------------------------------------------------------------- as a teacher projects it: 1366 px, nothing cut
WIDE = {"width": 1366, "height": 800}
CUT = """el => [el, ...el.querySelectorAll('*')].filter(e => e.scrollWidth > e.clientWidth + 1 && e.clientWidth > 0
    && getComputedStyle(e).overflowX !== 'visible' && e.textContent.trim())
    .map(e => e.textContent.trim().slice(0, 40))"""
ELLIPSIS = """el => [...el.querySelectorAll('*')].filter(e => getComputedStyle(e).textOverflow === 'ellipsis'
    && e.scrollWidth > e.clientWidth + 1).map(e => e.textContent.trim().slice(0, 40))"""
BADGES = "() => [...document.querySelectorAll('.wrap .error')].filter(e => e.offsetParent).map(e => e.textContent)"


def _no_badges(page) -> None:
    """No "Error" badge over any output, once the step that follows a failed event has run (a round trip)."""
    try:
        page.wait_for_function(f"() => ({BADGES})().length === 0", timeout=10_000)
    except PlaywrightTimeout:
        pass
    assert page.evaluate(BADGES) == []


@pytest.fixture()
def wide(browser, server):
    """A visitor on a projector-sized window, 1366 px wide."""
    context = browser.new_context(viewport=WIDE)
    page = context.new_page()
    page.goto(server.url)
    expect(page.locator("#header")).to_contain_text(EMBEDDED, timeout=30_000)
    yield page
    context.close()


def _search(page, text: str) -> None:
    box = page.get_by_label("Text", exact=True)
    box.fill(text)
    box.press("Enter")
    expect(page.locator("#search-timing")).to_contain_text("images", timeout=20_000)


def _svg_fits(locator) -> list[str]:
    """The texts of an SVG that reach outside its own box (a label cut at the edge)."""
    return locator.evaluate("""svg => { const b = svg.getBoundingClientRect();
        return [...svg.querySelectorAll('text')].filter(t => { const r = t.getBoundingClientRect();
            return r.width && (r.left < b.left - 1 || r.right > b.right + 1 || r.top < b.top - 1); })
            .map(t => t.textContent); }""")


def test_search_results_captions_and_histogram_are_shown_whole(wide):
    _search(wide, "a red circle")
    expect(wide.locator("#results img")).to_have_count(12)
    captions = wide.locator("#results .caption-label")
    assert wide.locator("#results").evaluate(ELLIPSIS) == []  # no "a medium red cir…"
    assert any("a medium red circle" in c for c in captions.all_inner_texts())  # (the first may be a video's moment)
    hist, column = wide.locator("#histogram svg").bounding_box(), wide.locator("#results").bounding_box()
    assert hist["width"] > 0.9 * column["width"]  # not a third of its width
    star = ROOT / "assets" / "examples" / "blue-star.png"
    wide.locator("#search-image input[type=file]").set_input_files(str(star))
    wide.get_by_role("button", name="Search", exact=True).click()
    table = wide.locator("#captions")
    expect(table).to_contain_text("star", timeout=20_000)
    expect(table.get_by_text("cosine")).to_be_visible()
    try:  # once the table has laid out its columns: the cosine column inside it, not scrolled off
        wide.wait_for_function(f"() => ({CUT})(document.querySelector('#captions')).length === 0", timeout=10_000)
    except PlaywrightTimeout:
        pytest.fail(f"captions table cut: {table.evaluate(CUT)}")


def test_a_good_search_after_a_bad_one_leaves_no_error_badge(wide):
    _search(wide, "a red circle")
    wide.get_by_label("Text", exact=True).fill("")
    wide.get_by_role("button", name="Search", exact=True).click()
    expect(wide.get_by_text("Type what you are looking for").first).to_be_visible(timeout=20_000)
    expect(wide.locator("#results img")).to_have_count(0)  # the old answer is gone, not badged
    _no_badges(wide)
    _search(wide, "a blue square")
    _no_badges(wide)


def test_more_like_this_redraws_the_histogram_and_drops_the_highlight(wide):
    _search(wide, "a green star")
    before = wide.locator("#histogram").inner_html()
    captions = wide.locator("#results .caption-label").all_inner_texts()
    n = next(i for i, c in enumerate(captions) if i >= 1 and "▶" not in c)  # an image: a video's moment would play
    wide.locator("#results img").nth(n).click()
    expect(wide.locator("#search-timing")).to_contain_text(f"like result {n + 1}", timeout=20_000)
    assert wide.locator("#histogram").inner_html() != before
    assert wide.locator("#results .thumbnail-item.selected").count() == 0


def test_classify_shows_every_template_column_whole_and_no_placeholder_headers(wide):
    wide.get_by_role("tab", name="Classify").click()
    expect(wide.locator("#per-template")).to_be_hidden()  # no "1 2 3" headers before the first answer
    wide.locator("#classify-examples tbody tr").first.click()
    table = wide.locator("#per-template")
    expect(table).to_contain_text("a photo of a {}.", timeout=20_000)
    for label in ("circle", "diamond", "hexagon", "heart"):
        expect(table.locator("th").get_by_text(label, exact=True)).to_be_visible()
    assert table.evaluate(CUT) == []
    heads = table.locator("th").evaluate_all("ths => ths.map(t => t.getBoundingClientRect().height)")
    assert max(heads) < 1.5 * min(heads)  # one line each: no "circl/e"


def test_explore_views_fit_their_labels_and_tiles(wide):
    wide.get_by_role("tab", name="Explore").click()
    matrix = wide.locator("#similarity-matrix svg")
    expect(matrix.locator("rect.cell").first).to_be_attached(timeout=30_000)
    assert _svg_fits(matrix) == []  # the last column's label too
    lab = wide.locator("#prompt-table svg")
    expect(lab).to_contain_text("ensemble", timeout=30_000)
    assert _svg_fits(lab) == []
    above = wide.locator("#lab-templates").bounding_box()
    first_cell = lab.locator("rect.cell").first.bounding_box()
    assert first_cell["y"] - (above["y"] + above["height"]) < 140  # no blank band above the matrix
    approx = wide.locator("#index-approx")
    expect(approx.locator("img")).to_have_count(10, timeout=30_000)
    approx.scroll_into_view_if_needed()
    wide.wait_for_function("() => [...document.querySelectorAll('#index-approx img')].every(i => i.naturalWidth)")
    assert approx.evaluate(ELLIPSIS) == []  # no blank "not in the…" tiles
    below = "el => el.getBoundingClientRect().bottom - el.querySelector('.grid-container').getBoundingClientRect()" \
        ".bottom"
    assert approx.evaluate(below) < 40  # as tall as its tiles: no blank band under them
    assert wide.locator("#map-method input[type=radio]").evaluate_all("rs => rs.map(r => r.value)") \
        == available_methods()  # only what works here


def test_the_model_list_names_each_mark_once(wide):
    wide.get_by_role("tab", name="Model").click()
    wide.locator("#model-picker input").click()
    options = wide.get_by_role("option")
    expect(options.first).to_be_visible(timeout=10_000)
    texts = options.all_inner_texts()
    assert any(EMBEDDED in t for t in texts)
    assert all(t.count("ships with mbm") <= 1 for t in texts)


def test_search_says_where_it_searches_and_an_unreadable_upload_changes_nothing(wide, tmp_path):
    where = wide.locator("#search-gallery")
    expect(where).to_contain_text("the server's gallery")
    junk = [tmp_path / "notimage.jpg", tmp_path / "empty.png"]
    junk[0].write_text("not a picture")
    junk[1].write_bytes(b"")
    wide.get_by_role("tab", name="Gallery").click()
    wide.locator("#uploads input[type=file]").set_input_files([str(p) for p in junk])
    wide.get_by_role("button", name="Index my uploads").click()
    expect(wide.get_by_text("none of the 2 files could be read", exact=False).first).to_be_visible(timeout=30_000)
    _no_badges(wide)
    expect(where).to_contain_text("the server's gallery")  # not switched to an empty gallery
    photos = sorted((ROOT / "assets" / "gallery" / "photos").glob("*.jpg"))[:5]
    wide.locator("#uploads input[type=file]").set_input_files([str(p) for p in photos])
    wide.get_by_role("button", name="Index my uploads").click()
    expect(wide.get_by_text("5 searchable images")).to_be_visible(timeout=30_000)
    expect(wide.locator("#gallery-skipped")).to_be_hidden()  # the earlier failures are not told again
    expect(where).to_contain_text("your uploads (5 images)")
    wide.locator("#uploads input[type=file]").set_input_files(str(photos[0]))
    wide.get_by_role("button", name="Index my uploads").click()
    expect(wide.get_by_text("0 images added")).to_be_visible(timeout=30_000)  # the box still holds the others too
    expect(wide.get_by_text("already there")).to_be_visible()
    expect(where).to_contain_text("your uploads (5 images)")  # the same file is the same item
    wide.get_by_role("tab", name="Search").click()
    expect(where).to_be_visible()


def test_search_examples_in_several_languages_run_with_one_click(wide):
    examples = wide.locator("#search-examples")
    for word in ("Fuchs", "renard", "キツネ", "лиса", "a dog", "a red circle"):
        expect(examples).to_contain_text(word)
    examples.get_by_text("a red circle", exact=True).click()
    expect(wide.locator("#results img")).to_have_count(12, timeout=20_000)
    expect(wide.get_by_label("Text", exact=True)).to_have_value("a red circle")


def test_a_failed_model_load_leaves_the_header_as_it_was(wide):
    wide.get_by_role("tab", name="Model").click()
    picker = wide.locator("#model-picker input")
    picker.fill("RN50:openai")  # not cached, and this machine is offline
    picker.press("Enter")
    wide.get_by_role("button", name="Load", exact=True).click()
    expect(wide.locator(".toast-body.error").first).to_be_visible(timeout=60_000)
    expect(wide.locator("#model-info")).to_contain_text(EMBEDDED)
    _no_badges(wide)
    expect(wide.locator("#header")).to_contain_text(EMBEDDED)


def test_exact_and_approximate_tiles_keep_their_size_on_a_small_gallery(wide):
    wide.get_by_role("tab", name="Gallery").click()
    photos = sorted((ROOT / "assets" / "gallery" / "photos").glob("*.jpg"))[:5]
    wide.locator("#uploads input[type=file]").set_input_files([str(p) for p in photos])
    wide.get_by_role("button", name="Index my uploads").click()
    expect(wide.get_by_text("5 searchable images")).to_be_visible(timeout=30_000)
    wide.get_by_role("tab", name="Explore").click()
    expect(wide.locator("#index-note")).to_contain_text("recall@", timeout=30_000)
    for side in ("#index-exact", "#index-approx"):
        tiles = wide.locator(f"{side} .thumbnail-item")
        assert tiles.count() >= 1
        column = wide.locator(side).bounding_box()["width"]
        widths = tiles.evaluate_all("ts => ts.map(t => t.getBoundingClientRect().width)")
        assert max(widths) < column / 4  # five to a row, however few there are: no giant crops
        assert wide.locator(side).evaluate(ELLIPSIS) == []


def test_a_view_that_cannot_draw_leaves_no_error_badge_and_draws_again(wide):
    _open_explore(wide)
    box = wide.locator("#map-query textarea, #map-query input").first
    box.fill(" ")
    box.press("Enter")
    expect(wide.get_by_text("Type a query").first).to_be_visible(timeout=20_000)
    _no_badges(wide)
    box.fill("a green star")
    box.press("Enter")
    expect(wide.locator("#embedding-map g.query")).to_contain_text("a green star", timeout=20_000)
    _no_badges(wide)


def test_captions_a_visitor_wrote_into_photos_show_as_text_never_as_markup(wide, tmp_path):
    """A visitor's photo may carry any description (EXIF, IPTC) or sidecar: the page shows it as text in the result
    tiles, the captions table and Explore's map, and runs none of it."""
    from PIL import Image
    attacks = {"red.jpg": '<img src=x onerror="window.__mbm_pwned=1">a red circle',
               "blue.jpg": '<script>window.__mbm_pwned=2</script>a blue square',
               "green.jpg": '[click](javascript:window.__mbm_pwned=3) **a green star** <b>bold</b>'}
    files = []
    for (name, text), colour in zip(attacks.items(), [(220, 30, 30), (30, 30, 220), (30, 200, 30)]):
        exif = Image.Exif()
        exif[0x010E] = text
        Image.new("RGB", (96, 96), colour).save(tmp_path / name, exif=exif)
        files.append(str(tmp_path / name))
    wide.get_by_role("tab", name="Gallery").click()
    wide.locator("#uploads input[type=file]").set_input_files(files)
    wide.get_by_role("button", name="Index my uploads").click()
    expect(wide.get_by_text("3 searchable images")).to_be_visible(timeout=30_000)
    wide.get_by_role("tab", name="Search").click()
    _search(wide, "a red circle")
    expect(wide.locator("#results")).to_contain_text("onerror=", timeout=20_000)  # the description, as text
    wide.locator("#search-image input[type=file]").set_input_files(files[0])
    wide.get_by_role("button", name="Search", exact=True).click()
    table = wide.locator("#captions")
    expect(table).to_contain_text("<script>", timeout=20_000)
    expect(table).to_contain_text("**a green star**")
    wide.get_by_role("tab", name="Explore").click()
    expect(wide.locator("#embedding-map svg.mbm-map circle").first).to_be_attached(timeout=30_000)
    for where in ("#results", "#captions", "#embedding-map"):
        assert wide.locator(f"{where} img[src='x'], {where} script, {where} a[href^='javascript']").count() == 0
    assert wide.evaluate("window.__mbm_pwned") is None
