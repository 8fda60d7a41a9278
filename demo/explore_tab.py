"""The Explore tab: the views a teacher projects to show *why* the model behaves as it does.

An embedding map (images and captions in 2-D, the query and its hits on it, the modality gap in numbers),
the similarity matrix of the CLIP paper, exact against approximate search, and a prompt lab. Every number
comes from `mbm.explore` through the engine; this module only draws.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import gradio as gr
import numpy as np
from PIL import Image

from demo.charts import heatmap_svg, map_svg, thumb_uri
from demo.common import EXAMPLES, Page, friendly, no_badge_after_failure, number, read_image
from demo.components import Choice, Picture, Slider
from demo.queries import check_query, parse_prompts
from mbm.classify import DEFAULT_TEMPLATES
from mbm.explore import (
    INDEX_KINDS,
    METHODS,
    EmbeddingMap,
    IndexComparison,
    PromptLab,
    SimilarityMatrix,
    available_methods,
)
from mbm.search import Query

DEFAULT_QUERY = "a red circle"
LAB_LABELS = "red, green, blue, yellow"
UMAP_MISSING = "The UMAP projection needs umap-learn on the server (pip install umap-learn); use pca."


def _text(text: str | None, local: bool) -> Query:
    return check_query(text, None, missing="Type a query (or drop an image) to place it on the map.", local=local)


# ---------------------------------------------------------------- drawing
def draw_map(m: EmbeddingMap, label: str) -> tuple[str, str]:
    thumbs = {p.id: thumb_uri(str(p.thumbnail), 56) for p in m.points if p.kind == "image" and p.thumbnail}
    svg = map_svg([(p.x, p.y) for p in m.points], [p.kind for p in m.points], [p.id for p in m.points],
                  [p.caption for p in m.points], thumbs, set(m.hits), m.query, label)
    g = m.gap
    shown = len({p.id for p in m.points})
    sample = f" The map shows {shown:,} of the {m.items:,} items (a fixed sample and every hit)." \
        if shown < m.items else ""
    axes = (f" The two axes hold {m.explained[0]:.0%} and {m.explained[1]:.0%} of the variance."
            if m.explained else "")
    other = "n/a (one pair)" if np.isnan(g.random) else f"{g.random:.3f}"
    words = (f"**Modality gap** over {g.n} image-caption pairs: an image and **its own caption** have mean cosine "
             f"**{g.matched:.3f}**; an image and **another item's caption** {other}. The two clouds' centres "
             f"are {g.centroid_distance:.3f} apart (on the unit sphere).{axes} Hover a point to see it and the "
             f"line to its partner.{sample}")
    return svg, words


def draw_matrix(s: SimilarityMatrix) -> tuple[str, str]:
    values = s.probs if s.softmax else s.cosine
    rows = [f"image #{i}" for i in s.images]
    images = [thumb_uri(str(t)) if t else "" for t in s.thumbnails]
    svg = heatmap_svg(values, rows, s.captions, row_images=images if all(images) else None,
                      lo=0.0 if s.softmax else None, hi=1.0 if s.softmax else None, diagonal=True,
                      what="probability" if s.softmax else "cosine", css_class="mbm-heat similarity")
    shown = (f"softmax over each row of {s.logit_scale:.1f} × cosine (the model's learned temperature "
             f"T = {1 / s.logit_scale:.3f})" if s.softmax else "raw cosines")
    return svg, (f"**{s.diagonal_hits} of {len(s.images)}** images score their own caption highest (the outlined "
                 f"diagonal). Showing {shown}.")


def draw_comparison(c: IndexComparison, k: int) -> tuple[list, list, str]:
    exact_ids = {i for i, _ in c.exact}
    def tiles(rows, mark):
        out = []
        for rank, (i, score) in enumerate(rows, 1):
            thumb = c.thumbnails.get(i)
            if thumb:
                flag = "✗ " if mark and i not in exact_ids else ""
                out.append((Image.open(thumb), f"{flag}{rank}. {score:.3f}"))  # a tile's picture is its caption
        return out
    words = (f"Top-{k}: the approximate index (`{c.factory}`, **{c.knob_name} = {c.knob}** of {c.knob_max}) found "
             f"**{c.overlap} of {len(c.exact)}** of the exact results: **recall@{k} = {c.recall:.0%}**. "
             f"Median search time: exact **{c.exact_ms:.3f} ms**, approximate **{c.approx_ms:.3f} ms**. "
             f"Raise {c.knob_name} to trade speed for recall.")
    return tiles(c.exact, False), tiles(c.approx, True), words


def draw_lab(lab: PromptLab) -> tuple[str, list[list], str]:
    rows = [*lab.templates, "ensemble (the prompts averaged)"]
    svg = heatmap_svg(np.vstack([lab.table, lab.ensemble[None]]), rows, lab.labels, lo=0.0, hi=1.0,
                      what="probability", css_class="mbm-heat prompts")
    tokens = [[info.text, info.n_tokens, " ".join(info.tokens), "cut short" if info.truncated else ""]
              for row in lab.prompts for info in row]
    warn = ""
    if lab.truncated:
        warn = (f"⚠️ {len(lab.truncated)} prompts are longer than the model's {lab.context_length} tokens, so it saw "
                f"them cut short: {', '.join(repr(t[:60]) for t in lab.truncated[:3])}.")
    best = lab.labels[int(lab.ensemble.argmax())]
    return svg, tokens, warn or f"The ensemble says **{best}** ({lab.ensemble.max():.0%})."


def _or_note(fn, args: tuple, n_outputs: int, note: int) -> tuple:
    """`fn(*args)` (a `friendly` view, so every failure arrives as a gr.Error, a bug's already logged), or why not in
    output `note` with the other outputs left as they are: one view that cannot be drawn must not blank the other
    three."""
    try:
        return fn(*args)
    except gr.Error as e:
        return tuple(f"**{e.message}**" if i == note else gr.skip() for i in range(n_outputs))


# ---------------------------------------------------------------- the tab
@dataclass
class _View:
    """One of the tab's four views: what it reads, what it draws, and the events that redraw it."""

    name: str  # its API endpoint, and its handler's key in `_handlers`
    inputs: list  # components whose values the handler takes, in order
    outputs: list
    triggers: list  # the events that redraw it
    note: int  # the output that says why, when the view cannot be drawn


def build(page: Page, choice: gr.State, tab: gr.Tab) -> None:
    views = [_map_view(choice), _matrix_view(choice), _index_view(choice), _lab_view()]
    show = _handlers(page)
    for view in views:  # each a named endpoint, for clients; the prompt lab queues with Classify's prompts
        group = {"concurrency_id": "prompts", "concurrency_limit": 1} if view.name == "prompt_lab" else {}
        event = gr.on(view.triggers, show[view.name], view.inputs, view.outputs, api_name=view.name, **group)
        no_badge_after_failure(event, view.outputs)
    index_text, index_k, kind, _, _ = views[2].inputs
    kind.change(lambda kind, text, k, choice: show["compare_indexes"](text, k, kind, 1, choice),  # a new index:
                [kind, index_text, index_k, choice], views[2].outputs, api_visibility="private")  # knob from 1
    tab.select(_draw_all(views, show), {c for view in views for c in view.inputs},
               [c for view in views for c in view.outputs], api_visibility="private")


def _map_view(choice: gr.State) -> _View:
    gr.Markdown("### 1. The embedding map: where images and captions land")
    with gr.Row():
        text = gr.Textbox(label="Query", value=DEFAULT_QUERY, elem_id="map-query", scale=3)
        k = Slider(1, 30, value=10, step=1, label="Hits to mark (k)", elem_id="map-k", scale=2)
        methods = available_methods()  # only what works here: UMAP when umap-learn is installed
        missing = {m: UMAP_MISSING for m in METHODS if m not in methods}
        method = Choice(methods, missing, value="pca", label="Projection", scale=1, elem_id="map-method",
                        info="UMAP too with: pip install umap-learn" if missing else None)
    the_map = gr.HTML(elem_id="embedding-map")
    gap = gr.Markdown(elem_id="modality-gap")
    return _View("embedding_map", [text, k, method, choice], [the_map, gap], [text.submit, k.release, method.change],
                 note=1)


def _matrix_view(choice: gr.State) -> _View:
    gr.Markdown("### 2. The similarity matrix: images × their captions")
    with gr.Row():
        n = Slider(2, 16, value=8, step=1, label="Pairs (N)", elem_id="matrix-n")
        seed = gr.Number(value=0, precision=0, label="Sample", minimum=0, elem_id="matrix-seed")
        softmax = gr.Checkbox(label="Softmax per row (with the model's temperature)", elem_id="matrix-softmax")
    matrix = gr.HTML(elem_id="similarity-matrix")
    note = gr.Markdown()
    return _View("similarity_matrix", [n, seed, softmax, choice], [matrix, note],
                 [n.release, seed.change, softmax.change], note=1)


def _index_view(choice: gr.State) -> _View:
    gr.Markdown("### 3. Exact and approximate search, side by side")
    with gr.Row():
        text = gr.Textbox(label="Query", value="a blue square", elem_id="index-query", scale=3)
        k = Slider(1, 30, value=10, step=1, label="k", scale=1)
        kind = gr.Radio(list(INDEX_KINDS), value="ivf", label="Approximate index", elem_id="index-kind", scale=1)
        knob = Slider(1, 64, value=1, step=1, label="nprobe (IVF lists scanned)", elem_id="index-knob", scale=2)
    note = gr.Markdown(elem_id="index-note")
    with gr.Row():
        # fit_columns off: two results of a small gallery stay tiles of the usual size, not two giant crops
        tiles = dict(columns=5, height="auto", allow_preview=False, fit_columns=False, elem_classes="mbm-fit")
        exact = gr.Gallery(label="Exact (every vector compared)", elem_id="index-exact", **tiles)
        approx = gr.Gallery(label="Approximate (✗: missed by the exact search)", elem_id="index-approx", **tiles)
    return _View("compare_indexes", [text, k, kind, knob, choice], [exact, approx, note, knob],
                 [text.submit, k.release, knob.release], note=2)


def _lab_view() -> _View:
    gr.Markdown("### 4. Prompt lab: what each prompt template says")
    with gr.Row():
        image = Picture(label="Image", height=200, value=str(EXAMPLES / "red-circle.png"), elem_id="lab-image")
        with gr.Column(scale=2):
            labels = gr.Textbox(label="Labels", value=LAB_LABELS, elem_id="lab-labels")
            templates = gr.Textbox(label="Templates ({} is the label)", value="\n".join(DEFAULT_TEMPLATES),
                                   lines=4, elem_id="lab-templates")
    table = gr.HTML(elem_id="prompt-table")
    warn = gr.Markdown(elem_id="prompt-warning")
    tokens = gr.Dataframe(headers=["prompt", "tokens", "what the model sees", ""], wrap=True,
                          label="Tokens of every prompt", elem_id="prompt-tokens")
    return _View("prompt_lab", [image, labels, templates], [table, tokens, warn],
                 [labels.submit, templates.blur, image.change], note=2)


def _handlers(page: Page) -> dict:
    """Each view's handler, by its endpoint's name."""
    engine = page.engine

    @friendly
    def show_map(text, k, method, choice):
        query = _text(text, page.local)
        m = engine.embedding_map(query, k=int(k), method=method, gallery=page.gallery(choice))
        return draw_map(m, text.strip())

    @friendly
    def show_matrix(n, seed, softmax, choice):
        seed = number(seed or 0, "Sample", 0, 2**31 - 1, integer=True)
        return draw_matrix(engine.similarity_matrix(int(n), seed, bool(softmax), page.gallery(choice)))

    @friendly
    def show_indexes(text, k, kind, knob, choice):
        query = _text(text, page.local)
        c = engine.compare_indexes(query, k=int(k), kind=kind, knob=int(knob), gallery=page.gallery(choice))
        label = f"{c.knob_name} ({'IVF lists scanned' if kind == 'ivf' else 'HNSW candidates kept'})"
        # a slider needs min < max: with one IVF list (a tiny gallery) there is nothing to turn
        knob = Slider(maximum=max(c.knob_max, 2), value=c.knob, label=label, interactive=c.knob_max > 1)
        return (*draw_comparison(c, int(k)), knob)

    @friendly
    def show_lab(image, labels_text, templates_text, request: gr.Request):
        if image is None:
            raise gr.Error("Drop an image into the prompt lab first.")
        labels, templates = parse_prompts(labels_text, templates_text, page, request.session_hash)
        with warnings.catch_warnings():  # the lab lists truncated prompts itself
            warnings.simplefilter("ignore", UserWarning)
            return draw_lab(engine.prompt_lab(read_image(image), labels, templates))

    return {"embedding_map": show_map, "similarity_matrix": show_matrix, "compare_indexes": show_indexes,
            "prompt_lab": show_lab}


def _draw_all(views: list[_View], show: dict):
    def draw_all(values: dict, request: gr.Request):
        """Every view at once when the tab opens: one round trip instead of four queued events. A view that cannot
        be drawn (say, a visitor's gallery of one image has no pairs for a matrix) says why in its own note."""
        drawn = []
        for view in views:  # `values`: each input component's value; the prompt lab also takes the request
            args = (*(values[c] for c in view.inputs), *((request,) if view.name == "prompt_lab" else ()))
            drawn += _or_note(show[view.name], args, len(view.outputs), view.note)
        return tuple(drawn)
    return draw_all
