"""The Learn tab: train a mini-CLIP live and search with it; then a walk through the pipeline on one example.

Training runs in a child process (`mbm.train.live`), one at a time per server (the "learn" queue), with its
own CPU thread budget so other visitors' searches keep a core. The trained model lives only in this
visitor's `gr.State`: nothing is written to disk, and it is gone when the page closes.
"""

from __future__ import annotations

import functools
import logging
import threading

import gradio as gr
from PIL import Image

from demo.charts import cells_svg, curve_svg, heatmap_svg, image_uri, vector_svg
from demo.common import EXAMPLES, Page, friendly, no_badge_after_failure, read_image
from demo.common import text as as_text
from demo.components import Picture, Slider
from demo.queries import MAX_QUERY_CHARS, check_query, tiles
from mbm.data.shapes import render
from mbm.engine import BUILTIN_GALLERY
from mbm.train.live import (
    LIVE_MAX_SECONDS,
    LiveTraining,
    embed_gallery,
    heldout_sample,
    search_with,
    snapshot_indices,
)

log = logging.getLogger(__name__)
MIN_SECONDS = 30  # the child takes ~5 s to start, and held-out R@5 passes 50% at ~23 s (docs/BENCHMARKS.md)
INTRO = """### Train a mini-CLIP yourself
Press **Train**: a fresh model (random weights) learns from image-caption pairs of the shapes world that are
generated as it goes. Watch the contrastive loss fall and the similarity matrix of held-out images against their
captions turn **diagonal**: each image comes to match its own caption best. Then search the built-in gallery
with *your* model beside the shipped one (trained for 36 minutes)."""


def _status(update, seconds: float, started: float) -> str:
    recall = update.recall or {}
    r5 = f" · held-out text→image R@5 **{recall['t2i_r5']:.0%}**, R@1 {recall['t2i_r1']:.0%}" if recall else ""
    return (f"step **{update.step}** · {update.seconds:.0f} of {seconds:.0f} s (its process took {started:.0f} s to "
            f"start) · loss **{update.loss:.3f}**{r5}")


def _starting(startups: list[float]) -> str:
    """What the visitor waits for before the first step, in the time the last starts on this server took: the child
    imports PyTorch and builds its model, seconds that depend on this machine and how busy it is."""
    if not startups:
        return ("Starting a fresh model with random weights in its own process; it first loads PyTorch, and how long "
                "that takes on this server is shown once it is up…")
    recent = sorted(startups[-5:])
    typical = recent[len(recent) // 2]
    return (f"Starting a fresh model with random weights in its own process: about **{typical:.0f} s** on this "
            f"server (the last start took {startups[-1]:.1f} s)…")


@functools.cache
def _snapshot_images() -> list[str]:
    """The held-out scenes of the training snapshot's rows, as small pictures (the same ones every run)."""
    scenes, texts = heldout_sample()
    return [image_uri(render(scenes[i], 64), "PNG") for i in snapshot_indices(texts)]


def _updates(run: LiveTraining):
    """The run's updates; a child that failed becomes a message for the visitor, not a traceback."""
    try:
        yield from run.updates()
    except RuntimeError as e:
        log.error("live training failed: %s", e)
        raise gr.Error("The training stopped unexpectedly on the server. Press Train to try again.") from None


def build_training(page: Page, demo: gr.Blocks) -> None:
    gr.Markdown(INTRO)
    with gr.Row():
        seconds = Slider(MIN_SECONDS, LIVE_MAX_SECONDS, value=60, step=5, elem_id="train-seconds",
                         label="Training time (seconds, start-up included)")
        train_button = gr.Button("Train", variant="primary", elem_id="train")
        stop_button = gr.Button("Stop", variant="stop", elem_id="stop-training")
    status = gr.Markdown("Not trained yet.", elem_id="train-status")
    with gr.Row():
        curve = gr.HTML(elem_id="loss-curve")
        snapshot = gr.HTML(elem_id="train-snapshot")
    mine = gr.State(None)  # {"encoder": Encoder, "embedded": (ids, vectors) of the built-in gallery or None}
    train, stop = _trainer()
    train_button.click(train, seconds, [status, curve, snapshot, mine], api_name="train_live",
                       concurrency_id="learn", concurrency_limit=1)
    stop_button.click(stop, None, None, api_name="stop_training", queue=False)
    demo.unload(stop)
    _build_compare(page, mine)


def _trainer():
    """`(train, stop)`: a visitor's run, streamed as (status, loss curve, snapshot, their model), and its end."""
    running: dict[str, LiveTraining] = {}  # session -> its training, so Stop and closing the page can end it
    startups: list[float] = []  # seconds from start to the first step of each run on this server, in order
    lock = threading.Lock()

    def train(seconds: float, request: gr.Request):
        run = LiveTraining(seconds=float(seconds))
        xs, ys, marks, snap, last, started = [], [], [], "", None, 0.0
        try:
            with lock:
                running[request.session_hash] = run
            yield _starting(startups), curve_svg([], []), "", None
            for update in _updates(run):
                if last is None:
                    startups.append(started := update.seconds)
                last = update
                xs.append(update.seconds)
                ys.append(update.loss)
                if update.recall:
                    marks.append((update.seconds, update.recall["t2i_r5"]))
                if update.snapshot is not None:
                    snap = _snapshot(update)
                yield _status(update, seconds, started), curve_svg(xs, ys, marks=marks), snap, gr.skip()
            if last is None or not last.done:
                yield "Stopped: the half-trained model was thrown away. Press Train to start again.", \
                    curve_svg(xs, ys, marks=marks), snap, None
                return
            encoder = run.encoder()
            yield (_status(last, seconds, started) + " — done: search with your model below.",
                   curve_svg(xs, ys, marks=marks), snap, {"encoder": encoder, "embedded": None})
        finally:
            run.cancel()
            with lock:
                if running.get(request.session_hash) is run:
                    running.pop(request.session_hash)

    def stop(request: gr.Request) -> None:
        with lock:
            run = running.get(request.session_hash)
        if run is not None:
            run.cancel()

    return train, stop


def _snapshot(update) -> str:
    """Held-out images against their captions, as the run has learnt them so far."""
    return heatmap_svg(update.snapshot, [f"held-out image of: {c}" for c in update.snapshot_captions],
                       update.snapshot_captions, row_images=_snapshot_images(), lo=-0.2, hi=1.0,
                       diagonal=True, css_class="mbm-heat snapshot")


def _build_compare(page: Page, mine: gr.State) -> None:
    """The built-in gallery searched with the visitor's trained model beside the serving one."""
    gr.Markdown("### Search the built-in gallery with your model and with the shipped one")
    with gr.Row():
        query = gr.Textbox(label="Text", value="a red circle", elem_id="compare-query")
        compare_button = gr.Button("Compare", elem_id="compare")
    with gr.Row():
        theirs = gr.Gallery(label=f"The serving model ({page.engine.encoder.name})", columns=4, height=300,
                            allow_preview=False, elem_id="compare-shipped")
        yours = gr.Gallery(label="Your model", columns=4, height=300, allow_preview=False, elem_id="compare-yours")

    @friendly
    def compare(text: str, mine: dict | None):
        text = check_query(text, None, missing="Type what to look for, e.g. 'a red circle'.", local=page.local)
        if not mine:
            raise gr.Error("Train your model first (press Train above), then compare.")
        gallery = page.engine.gallery_at(BUILTIN_GALLERY)
        shipped = page.engine.search(text, k=8, gallery=gallery)
        if mine["embedded"] is None:  # the built-in gallery through their model, once, in memory
            mine = {**mine, "embedded": embed_gallery(mine["encoder"], gallery)}
        hits = search_with(mine["encoder"], gallery, text, k=8, embedded=mine["embedded"])
        return tiles(shipped), tiles(hits), mine

    no_badge_after_failure(gr.on([compare_button.click, query.submit], compare, [query, mine], [theirs, yours, mine],
                                 api_name="compare_models"), [theirs, yours, mine])


STAGES = (  # (stage, image, text, the code that does it)
    ("1. pre-processing", "resize to the model's input, normalise the colours",
     "split into BPE tokens, with start and end markers", "open_clip's transform and tokenizer, `Encoder.prepare`"),
    ("2. per-modality features", "a CNN (ResNet) turns pixels into a feature map", "a Transformer reads the tokens",
     "`model.visual`, `model.transformer`"),
    ("3. projection", "a linear map into the shared space, then length 1", "the same for text",
     "`Encoder.encode_images` / `encode_texts`"),
    ("4. matching", "cosine of the two unit vectors: what **Search** ranks and **Classify** softmaxes", "",
     "`mbm.search`, `mbm.classify`"),
    ("5. fusion and head", "image tokens, colour cells and the question fused (concat, gating or attention), "
     "then a linear head", "", "`mbm.fusion.FusionClassifier`"),
)
PIPELINE = ("### How it works: one image and one text, stage by stage\nThe seed design, and where each stage lives "
            "in mbm:\n\n| stage | image | text | code |\n|---|---|---|---|\n"
            + "".join(f"| {' | '.join(row)} |\n" for row in STAGES)
            + "\nPress **Run it through** to see the real numbers at every stage for your image and text.")


def build_walkthrough(page: Page, tabs: gr.Tabs) -> None:
    gr.Markdown(PIPELINE)
    with gr.Row():
        image = Picture(label="Image", height=200, value=str(EXAMPLES / "scene.png"), elem_id="trace-image")
        with gr.Column(scale=2):
            text = gr.Textbox(label="Text (a caption or a question)", value="what shape is at the top right?",
                              elem_id="trace-text")
            run_button = gr.Button("Run it through", variant="primary", elem_id="trace-run")
    outputs, links = _stages()
    no_badge_after_failure(run_button.click(_tracer(page), [image, text], outputs, api_name="pipeline_trace"),
                           outputs)
    for button, tab in links:
        button.click(lambda tab=tab: gr.Tabs(selected=tab), None, tabs, api_visibility="private")


def _stages() -> tuple[list, list[tuple[gr.Button, str]]]:
    """The stages' outputs, in the order `_tracer`'s handler returns them, and the buttons to the tabs they explain."""
    gr.Markdown("#### 1. Pre-processing: what the model is actually given")
    with gr.Row():
        seen = gr.Image(label="The image the model sees", height=200, interactive=False, elem_id="trace-seen")
        tokens = gr.HighlightedText(label="The tokens the text tower sees (</w> ends a word)", elem_id="trace-tokens",
                                    show_inline_category=False, show_legend=False,
                                    color_map={"marker": "#e07b24", "token": "#3b6fd6"})
    gr.Markdown("#### 2-3. Features of each tower, projected into the shared space")
    features = gr.Markdown(elem_id="trace-features")
    vectors = gr.HTML(elem_id="trace-vectors")
    with gr.Row():
        to_search = gr.Button("Cosine ranks the Search results: open Search", size="sm")
        to_explore = gr.Button("See every embedding at once: open Explore", size="sm")
    gr.Markdown("#### 5. Fusion and the head: the question answered from both")
    with gr.Row():
        colours = gr.HTML(label="The colour branch's input", elem_id="trace-colours")
        answers = gr.Label(label="Fused heads' answer", num_top_classes=4, elem_id="trace-answer")
    fusion_note = gr.Markdown()
    to_classify = gr.Button("Ask your own questions: open Classify", size="sm")
    return ([seen, tokens, features, vectors, colours, answers, fusion_note],
            [(to_search, "search"), (to_explore, "explore"), (to_classify, "classify")])


def _tracer(page: Page):
    """The handler of Run it through: one image and one text through every stage, in words and pictures."""

    @friendly
    def run(image: Image.Image | None, text: str):
        if image is None:
            raise gr.Error("Drop an image first (or use the example), then press Run it through.")
        text = as_text(text, "The text")
        if len(text) > MAX_QUERY_CHARS:
            raise gr.Error(f"Keep the text under {MAX_QUERY_CHARS:,} characters.")
        t = page.engine.pipeline_trace(read_image(image), text)
        cut = (f" It takes {t.n_tokens} tokens, more than the model's {t.context_length}: the rest is cut off."
               if t.n_tokens and t.n_tokens > t.context_length else "")
        words = (f"**Image tower** ({t.image_features.what}): shape {t.image_features.shape}, first values "
                 f"{_numbers(t.image_features.head)}.\n\n**Text tower** ({t.text_features.what}): shape "
                 f"{t.text_features.shape}, first values {_numbers(t.text_features.head)}.\n\n"
                 f"Both are projected to **{len(t.image_embedding)}** numbers and scaled to length 1 (below, one "
                 f"stripe per number). Their **cosine is {t.cosine:.3f}**; zero-shot multiplies cosines by "
                 f"{t.logit_scale:.0f} before its softmax.{cut}")
        strips = (f"<p>image embedding</p>{vector_svg(t.image_embedding, 'image embedding')}"
                  f"<p>text embedding</p>{vector_svg(t.text_embedding, 'text embedding')}")
        best = {f"{name}: {a}": p for name, dist in t.answers.items() for a, p in list(dist.items())[:2]}
        marked = [(tok, "marker" if tok.startswith("<") else "token") for tok in t.tokens]
        cells = cells_svg(t.colour) if t.colour is not None else ""
        return (t.image.resize((192, 192), Image.Resampling.NEAREST), marked, words, strips, cells, best or None,
                t.note)

    return run


def _numbers(values: list[float]) -> str:
    return ", ".join(f"{v:+.2f}" for v in values[:6]) + " …"


def build(page: Page, demo: gr.Blocks, tabs: gr.Tabs) -> None:
    build_training(page, demo)
    build_walkthrough(page, tabs)
