"""The Search tab: text->image, image->image, both weighted, "more like this", and image->text."""

from __future__ import annotations

import time
from dataclasses import dataclass

import gradio as gr
from PIL import Image

from demo.charts import histogram_svg
from demo.common import Page, friendly, number, read_drawing, read_image, searching_line
from demo.common import text as as_text
from demo.components import Drawing, Picture, Slider
from demo.queries import MAX_QUERY_CHARS, check_query, tiles
from demo.video_views import Clips, moment_of, player, show_moment_handler, tile_keys
from mbm.search import Hit
from mbm.text import SHARED_MAX_TEXTS as MAX_TEXTS

MAX_K = 100  # results of one JSON search


EXAMPLES = ["a red circle", "a dog", "Fuchs", "renard", "キツネ", "лиса", '2 x "red circle" - blue']


@dataclass
class _Search:
    """The components of the text/image search, in the order the page shows them."""

    where: gr.Markdown  # which gallery is searched (kept in step by the Gallery tab)
    text: gr.Textbox
    examples: gr.Examples
    image: Picture
    drawing: Drawing
    draw_button: gr.Button
    weight: Slider
    k: Slider
    threshold: Slider
    button: gr.Button
    timing: gr.Markdown
    results: gr.Gallery
    histogram: gr.HTML
    captions: gr.Dataframe  # image->text for an image query
    hit_ids: gr.State  # per result shown: its item id, for "more like this", or a video's moment, to play it
    moment: gr.State  # the best video moment among them (mbm.search.Hit's path and span), for the player
    player: gr.Video  # a clip cut around that moment
    player_line: gr.Markdown


def build(page: Page, choice: gr.State) -> gr.Markdown:
    """The tab; returns its line saying which gallery is searched, for the Gallery tab to update."""
    ui = _layout(page)
    _wire(ui, choice, *_handlers(page), show_moment_handler(page, Clips()))
    _build_describe(page, ui.image, ui.k, choice)
    _build_api(page)
    return ui.where


def _layout(page: Page) -> _Search:
    where = gr.Markdown(searching_line(page.engine.gallery, None), elem_id="search-gallery")
    with gr.Row():
        with gr.Column(scale=2):
            text = gr.Textbox(label="Text", placeholder='a red circle   (or: 2 x "red circle" - blue)', lines=1)
            examples = gr.Examples([[e] for e in EXAMPLES], text, elem_id="search-examples",
                                   label="Try one (mbm-world knows shapes and 1,570 emoji concepts in 28 languages, "
                                   "best in English; the gallery's emoji are an art style it never saw)")
            image = Picture(label="Image (optional)", height=220, elem_id="search-image")
            with gr.Accordion("Or draw it", open=False, elem_id="search-draw"):
                drawing = Drawing(label="Draw a shape or a thing: pick the brush on the left, then a colour",
                                  height=320, elem_id="search-drawing")
                draw_button = gr.Button("Search my drawing", elem_id="search-drawing-button")
        with gr.Column(scale=1):
            weight = Slider(0, 2, value=1.0, step=0.1, label="Image weight (when text and image are both given)")
            k = Slider(1, 48, value=12, step=1, label="Results (k)")
            threshold = Slider(-0.2, 1.0, value=0.0, step=0.01, label="Score threshold (cosine)")
            button = gr.Button("Search", variant="primary")
    timing = gr.Markdown(elem_id="search-timing")
    results = gr.Gallery(label="Results: click an image for more like it, a video's moment (▶) to play it", columns=6,
                         height=420, format="jpeg", elem_id="results", allow_preview=False, elem_classes="mbm-tiles")
    video, line = player()
    histogram = gr.HTML(label="Scores of every gallery image for this query", elem_id="histogram")
    captions = gr.Dataframe(headers=["caption", "cosine"], label="Captions ranked for the image (image->text)",
                            visible=False, elem_id="captions", wrap=True, column_widths=["85%", "15%"])
    return _Search(where, text, examples, image, drawing, draw_button, weight, k, threshold, button, timing,
                   results, histogram, captions, gr.State([]), gr.State(None), video, line)


def _handlers(page: Page):
    """`(search, more_like, search_drawing)`: each returns (tiles, histogram, note, captions, hit ids, moment)."""

    @friendly
    def search(text, image, weight, k, threshold, choice):
        query = check_query(text, image, local=page.local)
        image = read_image(image)
        gallery = page.gallery(choice)
        start = time.perf_counter()
        vec = page.engine.embed_image(image) if image is not None else None  # once, for search and captions
        hits = page.engine.search(query, vec, weight, int(k), threshold, gallery)
        scores = hits.scores
        ranked = page.engine.describe(vec, k=10, gallery=gallery) if vec is not None else []
        took = (time.perf_counter() - start) * 1000
        kind = "text+image" if query and image is not None else "text" if query else "image"
        note = (f"**{len(hits)}** of {_scored(gallery, scores)} ({kind} query) in **{took:.0f} ms**{_frames(gallery)}"
                + ("" if hits else " — none scores above the threshold; lower it to see more.")
                + (f"\n\n{beyond}" if (beyond := page.engine.beyond(as_text(text, "The query"))) else ""))
        return (tiles(hits), histogram_svg(scores, threshold, [h.score for h in hits]), note,
                gr.Dataframe(value=[[t, round(s, 4)] for t, s in ranked], visible=bool(ranked)), tile_keys(hits),
                moment_of(hits))

    @friendly
    def more_like(hit_ids, k, threshold, choice, evt: gr.SelectData):
        if not hit_ids or evt.index is None or evt.index >= len(hit_ids):
            raise gr.Error("Search first, then click a result to find more like it.")
        if isinstance(hit_ids[evt.index], dict):  # a video's moment: play it, the results stay
            return (*(gr.skip(),) * 5, hit_ids[evt.index])
        gallery = page.gallery(choice)
        start = time.perf_counter()
        hits = page.engine.more_like(hit_ids[evt.index], int(k), threshold, gallery)
        took = (time.perf_counter() - start) * 1000
        note = (f"**{len(hits)}** of {_scored(gallery, hits.scores)} like result {evt.index + 1} in "
                f"**{took:.0f} ms**{_frames(gallery)}")
        return (_grid(hits), histogram_svg(hits.scores, threshold, [h.score for h in hits]), note,
                gr.Dataframe(visible=False), tile_keys(hits), moment_of(hits))

    @friendly
    def search_drawing(drawing, text, weight, k, threshold, choice):
        """Image->image (with the text too, if any) for a picture drawn on the page."""
        picture = read_drawing(drawing, "Draw something on the canvas first, then press Search my drawing.")
        return search(text, picture, weight, k, threshold, choice)

    return search, more_like, search_drawing


def _wire(ui: _Search, choice: gr.State, search, more_like, search_drawing, show_moment) -> None:
    outputs = [ui.results, ui.histogram, ui.timing, ui.captions, ui.hit_ids, ui.moment]
    inputs = [ui.text, ui.image, ui.weight, ui.k, ui.threshold, choice]
    # a failed request clears what it would have replaced: the old answer under an "Error" badge is not this query's
    cleared = lambda: (gr.Gallery(value=None, selected_index=None), "", "", gr.Dataframe(visible=False), [], None,
                       gr.Video(value=None, visible=False), "")
    events = [gr.on([ui.button.click, ui.text.submit], search, inputs, outputs, api_name="search"),
              ui.examples.load_input_event.then(search, inputs, outputs, api_visibility="private"),
              ui.draw_button.click(search_drawing, [ui.drawing, *inputs[:1], *inputs[2:]], outputs,
                                   api_name="search_drawing"),
              ui.results.select(more_like, [ui.hit_ids, ui.k, ui.threshold, choice], outputs,
                                api_name="more_like_click", api_visibility="private")]
    for i, event in enumerate(events):
        event.failure(cleared, None, [*outputs, ui.player, ui.player_line], api_visibility="private")
        # the player follows every search: its clip is cut once the results are shown (the search itself stays quick)
        event.success(show_moment, ui.moment, [ui.player, ui.player_line], **(
            {"api_name": "search_moment"} if i == 0 else {"api_visibility": "private"}))


def _build_describe(page: Page, image: Picture, k: Slider, choice: gr.State) -> None:
    """image->text with the visitor's own texts, in an accordion under the results."""

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
        ranked = gr.Dataframe(headers=["text", "cosine"], label="Texts, best first", wrap=True,
                              column_widths=["85%", "15%"], elem_id="ranked-texts")
    describe_button.click(describe, [image, texts, k, choice], ranked, api_name="describe")


def _build_api(page: Page) -> None:
    """Two JSON endpoints over the server's gallery, for clients rather than the page."""

    @friendly
    def search_items(text: str, k: int = 12, threshold: float = -1.0) -> list[dict]:
        """text->image in the server's gallery as JSON rows: id, file (inside the gallery), caption, score."""
        query = check_query(text, None, local=page.local)
        return _rows(page.engine.search(query, k=_check_k(k), threshold=_check_threshold(threshold)))

    @friendly
    def more_like(item_id: int, k: int = 12, threshold: float = -1.0) -> list[dict]:
        """The server gallery's images most like item `item_id` (an id from search_items), as JSON rows."""
        item_id = number(item_id, "The item id (from search_items)", 0, 2**62, integer=True)
        return _rows(page.engine.more_like(item_id, _check_k(k), _check_threshold(threshold)))

    gr.api(search_items, api_name="search_items")
    gr.api(more_like, api_name="more_like")


def _scored(gallery, scores) -> str:
    """"300 images": the images among what a query's histogram counted (the rest are video frames)."""
    return f"{len(scores) - len(gallery.frames().ids):,} images"


def _frames(gallery) -> str:
    """" · and 15 video frames" when the gallery holds videos, whose frames are ranked with the images."""
    frames = len(gallery.frames().ids)
    return f" · and {frames:,} video frames" if frames else ""


def _grid(hits: list[Hit]) -> gr.Gallery:
    """The result tiles, with no tile selected: a highlight left from the last click would mark a new result."""
    return gr.Gallery(value=tiles(hits), selected_index=None)


def _check_k(k: int) -> int:
    return number(k, "k, the number of results,", 1, MAX_K, integer=True)


def _check_threshold(threshold: float) -> float:
    return number(threshold, "The threshold (a cosine score)", -1, 1)


def _rows(hits: list[Hit]) -> list[dict]:
    return [dict(id=h.id, file=h.relpath, caption=h.caption, score=round(h.score, 4), start=h.start, end=h.end)
            for h in hits]  # start, end: a video moment's seconds; None for an image
