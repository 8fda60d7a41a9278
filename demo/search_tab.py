"""The Search tab: text->image, image->image, both weighted, "more like this", and image->text."""

from __future__ import annotations

import time

import gradio as gr
from PIL import Image

from demo.charts import histogram_svg
from demo.common import Page, friendly, image_input, number, read_drawing, read_image
from demo.common import text as as_text
from demo.components import Drawing, Slider
from mbm.search import Hit, parse_query
from mbm.text import MAX_TEXT_CHARS, clean_text
from mbm.text import SHARED_MAX_TEXTS as MAX_TEXTS

MAX_QUERY_CHARS = MAX_TEXT_CHARS
MAX_K = 100  # results of one JSON search


def _tiles(hits: list[Hit]) -> list[tuple[Image.Image, str]]:
    """`(thumbnail, "score · caption")` pairs for gr.Gallery. Images, not paths: Gradio copies them to its own
    cache, so no folder of the host (or of another session) has to be opened to the web."""
    tiles = []
    for h in hits:
        image = Image.open(h.thumbnail if h.thumbnail else h.path)
        image.draft("RGB", (256, 256))
        tiles.append((image, f"{h.score:.3f} · {h.caption}"))
    return tiles


def check_query(text: str | None, image: Image.Image | str | None,
                missing: str = "Type what you are looking for, or drop an image, then press Search.",
                local: bool = False) -> str:
    """The query text, stripped; a gr.Error saying `missing` when there is neither text nor image, when the text is
    too long, or when it names a file (`@photo.jpg`) and the page is not `local`: such terms read files of the host,
    which only its owner may do. A text that is not a query raises `parse_query`'s ValueError (callers are
    `friendly`)."""
    text = clean_text(as_text(text, "The query")).strip()
    if not text and image is None:
        raise gr.Error(missing)
    if len(text) > MAX_QUERY_CHARS:
        raise gr.Error(f"That query is {len(text):,} characters long; keep it under {MAX_QUERY_CHARS:,}.")
    if text and not local and any(t.kind == "image" for t in parse_query(text)):  # a bad query: ValueError
        raise gr.Error("'@file' terms read files on the server, so they only work when mbm runs on your own "
                       "computer. Drop the image into the Image box instead.")
    return text


def build(page: Page, choice: gr.State) -> None:
    with gr.Row():
        with gr.Column(scale=2):
            text = gr.Textbox(label="Text", placeholder='a red circle   (or: 2 x "red circle" - blue)', lines=1)
            image = image_input(label="Image (optional)", height=220, elem_id="search-image")
            with gr.Accordion("Or draw it", open=False, elem_id="search-draw"):
                drawing = Drawing(label="Draw a shape or a thing: pick the brush on the left, then a colour",
                                  height=320, elem_id="search-drawing")
                draw_button = gr.Button("Search my drawing", elem_id="search-drawing-button")
        with gr.Column(scale=1):
            weight = Slider(0, 2, value=1.0, step=0.1, label="Image weight (when text and image are both given)")
            k = Slider(1, 48, value=12, step=1, label="Results (k)")
            threshold = Slider(-0.2, 1.0, value=0.0, step=0.01, label="Score threshold (cosine)")
            button = gr.Button("Search", variant="primary")
    timing = gr.Markdown()
    results = gr.Gallery(label="Results: click one for more like it", columns=6, height=420, format="jpeg",
                         elem_id="results", allow_preview=False)
    histogram = gr.HTML(label="Scores of every gallery image for this query", elem_id="histogram")
    captions = gr.Dataframe(headers=["caption", "cosine"], label="Captions ranked for the image (image->text)",
                            visible=False, elem_id="captions")
    hit_ids = gr.State([])

    @friendly
    def search(text, image, weight, k, threshold, choice):
        text = check_query(text, image, local=page.local)
        image = read_image(image)
        gallery = page.gallery(choice)
        start = time.perf_counter()
        vec = page.engine.embed_image(image) if image is not None else None  # once, for search and captions
        hits, scores = page.engine.search_with_scores(text or None, vec, weight, int(k), threshold, gallery)
        ranked = page.engine.describe(vec, k=10, gallery=gallery) if vec is not None else []
        took = (time.perf_counter() - start) * 1000
        kind = "text+image" if text and image is not None else "text" if text else "image"
        note = (f"**{len(hits)}** of {len(scores)} images ({kind} query) in **{took:.0f} ms**"
                + ("" if hits else " — none scores above the threshold; lower it to see more."))
        return (_tiles(hits), histogram_svg(scores, threshold, [h.score for h in hits]), note,
                gr.Dataframe(value=[[t, round(s, 4)] for t, s in ranked], visible=bool(ranked)), [h.id for h in hits])

    @friendly
    def more_like(hit_ids, k, threshold, choice, evt: gr.SelectData):
        if not hit_ids or evt.index is None or evt.index >= len(hit_ids):
            raise gr.Error("Search first, then click a result to find more like it.")
        gallery = page.gallery(choice)
        start = time.perf_counter()
        hits = page.engine.more_like(hit_ids[evt.index], int(k), threshold, gallery)
        took = (time.perf_counter() - start) * 1000
        return _tiles(hits), f"**{len(hits)}** images like result {evt.index + 1} in **{took:.0f} ms**", \
            [h.id for h in hits]

    @friendly
    def search_drawing(drawing, text, weight, k, threshold, choice):
        """Image->image (with the text too, if any) for a picture drawn on the page."""
        picture = read_drawing(drawing, "Draw something on the canvas first, then press Search my drawing.")
        return search(text, picture, weight, k, threshold, choice)

    outputs = [results, histogram, timing, captions, hit_ids]
    inputs = [text, image, weight, k, threshold, choice]
    button.click(search, inputs, outputs, api_name="search")
    draw_button.click(search_drawing, [drawing, *inputs[:1], *inputs[2:]], outputs, api_name="search_drawing")
    text.submit(search, inputs, outputs, api_name="search_on_enter", api_visibility="private")
    results.select(more_like, [hit_ids, k, threshold, choice], [results, timing, hit_ids], api_name="more_like_click",
                   api_visibility="private")

    @friendly
    def describe(image: Image.Image | None, texts: str, k: int, choice, request: gr.Request) -> list[list]:
        """image->text: rank the given texts (one per line), or else the gallery's captions, for an image."""
        if image is None:
            raise gr.Error("Give an image to describe.")
        bank = [t for t in as_text(texts, "The texts to rank").splitlines() if t.strip()] or None
        if bank and len(bank) > MAX_TEXTS:
            raise gr.Error(f"At most {MAX_TEXTS} texts at once, please; you gave {len(bank):,}.")
        if bank and max(map(len, bank)) > MAX_QUERY_CHARS:
            raise gr.Error(f"Keep each text under {MAX_QUERY_CHARS:,} characters.")
        if bank:
            page.budget.spend(request.session_hash, len(bank))
        ranked = page.engine.describe(read_image(image), bank, int(k), page.gallery(choice))
        return [[t, round(s, 4)] for t, s in ranked]

    with gr.Accordion("Rank your own texts for an image (image->text)", open=False):
        texts = gr.Textbox(label="Texts, one per line (empty: the gallery's captions)", lines=4)
        describe_button = gr.Button("Rank texts")
        ranked = gr.Dataframe(headers=["text", "cosine"], label="Texts, best first")
    describe_button.click(describe, [image, texts, k, choice], ranked, api_name="describe")

    @friendly
    def search_items(text: str, k: int = 12, threshold: float = -1.0) -> list[dict]:
        """text->image in the server's gallery as JSON rows: id, file (inside the gallery), caption, score."""
        text = check_query(text, None, local=page.local)
        return _rows(page.engine.search(text, k=_check_k(k), threshold=_check_threshold(threshold)))

    @friendly
    def more_like(item_id: int, k: int = 12, threshold: float = -1.0) -> list[dict]:
        """The server gallery's images most like item `item_id` (an id from search_items), as JSON rows."""
        item_id = number(item_id, "The item id (from search_items)", 0, 2**62, integer=True)
        return _rows(page.engine.more_like(item_id, _check_k(k), _check_threshold(threshold)))

    gr.api(search_items, api_name="search_items")
    gr.api(more_like, api_name="more_like")


def _check_k(k: int) -> int:
    return number(k, "k, the number of results,", 1, MAX_K, integer=True)


def _check_threshold(threshold: float) -> float:
    return number(threshold, "The threshold (a cosine score)", -1, 1)


def _rows(hits: list[Hit]) -> list[dict]:
    return [dict(id=h.id, file=h.relpath, caption=h.caption, score=round(h.score, 4)) for h in hits]
