"""The Classify tab: zero-shot classification with editable prompt templates and a per-template breakdown;
then a question about the same image answered by the fused image+text heads, every strategy side by side."""

from __future__ import annotations

import re
import warnings

import gradio as gr
from PIL import Image

from demo.common import Page, friendly, image_input, read_drawing, read_image
from demo.common import text as as_text
from demo.components import Drawing
from mbm.classify import DEFAULT_TEMPLATES
from mbm.errors import InputError
from mbm.fusion import STRATEGIES
from mbm.models._registry import ASSETS
from mbm.text import MAX_TEMPLATES, SHARED_MAX_PROMPTS, check_prompts, clean_text
from mbm.text import MAX_TEXT_CHARS as MAX_PROMPT_CHARS
from mbm.text import SHARED_MAX_LABELS as MAX_LABELS

EXAMPLES = ASSETS / "examples"


def parse_labels(text: str) -> list[str]:
    """Labels from one-per-line or comma-separated text, stripped, duplicates dropped, order kept; a gr.Error unless
    there are 2 to `MAX_LABELS` of them, each at most `MAX_PROMPT_CHARS` long."""
    parts = re.split(r"[\n,]", clean_text(as_text(text, "The labels"), keep_lines=True))
    labels = list(dict.fromkeys(s.strip() for s in parts if s.strip()))
    if len(labels) < 2:
        raise gr.Error("Give at least two labels (different ones), one per line or separated by commas.")
    if len(labels) > MAX_LABELS:
        raise gr.Error(f"At most {MAX_LABELS} labels, please; you gave {len(labels):,}.")
    _check_lengths(labels, "label")
    return labels


def parse_templates(text: str) -> list[str]:
    lines = clean_text(as_text(text, "The templates"), keep_lines=True).splitlines()
    templates = list(dict.fromkeys(t.strip() for t in lines if t.strip()))
    if not templates:
        raise gr.Error('Give at least one prompt template, one per line, with {} where the label goes, '
                       'e.g. "a photo of a {}."')
    if len(templates) > MAX_TEMPLATES:
        raise gr.Error(f"At most {MAX_TEMPLATES} prompt templates, please; you gave {len(templates):,}.")
    _check_lengths(templates, "template")
    return templates


def parse_prompts(labels_text: str, templates_text: str, page: Page, session: str) -> tuple[list[str], list[str]]:
    """`parse_labels` and `parse_templates`, and a gr.Error when together they make more prompts than one request of
    a shared page may embed (`mbm.text.SHARED_MAX_PROMPTS`), or than the session's budget has left this minute."""
    labels, templates = parse_labels(labels_text), parse_templates(templates_text)
    try:
        check_prompts(len(labels), len(templates), SHARED_MAX_PROMPTS)
    except InputError as e:
        raise gr.Error(f"{str(e)[0].upper()}{str(e)[1:]}.") from None
    page.budget.spend(session, len(labels) * len(templates))  # InputError: `friendly` shows it
    return labels, templates


def _check_lengths(texts: list[str], what: str) -> None:
    long = next((t for t in texts if len(t) > MAX_PROMPT_CHARS), None)
    if long is not None:
        raise gr.Error(f"Keep each {what} under {MAX_PROMPT_CHARS:,} characters; one has {len(long):,}.")


def build(page: Page) -> None:
    with gr.Row():
        with gr.Column():
            image = image_input(label="Image", height=260, elem_id="classify-image")
            with gr.Accordion("Or draw it", open=False, elem_id="classify-draw"):
                drawing = Drawing(label="Draw a shape or a thing: pick the brush on the left, then a colour",
                                  height=320, elem_id="classify-drawing")
                draw_button = gr.Button("Classify my drawing", elem_id="classify-drawing-button")
        with gr.Column():
            labels = gr.Textbox(label="Labels (one per line or comma-separated)", lines=3,
                                value="circle, square, triangle, star, hexagon, cross, diamond, heart")
            templates = gr.Textbox(label="Prompt templates ({} is where the label goes; one per line)",
                                   value="\n".join(DEFAULT_TEMPLATES), lines=4)
            button = gr.Button("Classify", variant="primary")
    with gr.Row():
        result = gr.Label(label="Probabilities (prompt ensemble)", num_top_classes=5, elem_id="zero-shot")
        breakdown = gr.Dataframe(label="What each template alone says", elem_id="per-template", wrap=True)
    warning = gr.Markdown()

    @friendly
    def classify(image: Image.Image | None, labels_text: str, templates_text: str, request: gr.Request):
        if image is None:
            raise gr.Error("Drop an image first, then press Classify.")
        labels, templates = parse_prompts(labels_text, templates_text, page, request.session_hash)
        with warnings.catch_warnings():  # the result lists truncated prompts; the page shows them itself
            warnings.simplefilter("ignore", UserWarning)
            out = page.engine.zero_shot(read_image(image), labels, templates)
        rows = [[t, *(round(out.per_template[t][label], 3) for label in out.probs)] for t in out.per_template]
        table = gr.Dataframe(value=rows, headers=["template", *out.probs])
        note = (f"⚠️ {len(out.truncated)} prompt(s) are longer than the model's {page.engine.encoder.context_length} "
                f"tokens and were cut short, e.g. “{out.truncated[0][:60]}…”" if out.truncated else "")
        return out.probs, table, note

    @friendly
    def classify_drawing(drawing, labels_text: str, templates_text: str, request: gr.Request):
        picture = read_drawing(drawing, "Draw something on the canvas first, then press Classify my drawing.")
        return classify(picture, labels_text, templates_text, request)

    button.click(classify, [image, labels, templates], [result, breakdown, warning], api_name="classify",
                 concurrency_id="prompts", concurrency_limit=1)  # one at a time: a big request may take a second
    draw_button.click(classify_drawing, [drawing, labels, templates], [result, breakdown, warning],
                      api_name="classify_drawing", concurrency_id="prompts", concurrency_limit=1)
    shapes = "circle, square, triangle, star, hexagon, cross, diamond, heart"
    colours = "red, orange, yellow, green, blue, purple, pink, brown, black, white"
    gr.Examples(
        examples=[[str(EXAMPLES / "red-circle.png"), shapes, "\n".join(DEFAULT_TEMPLATES)],
                  [str(EXAMPLES / "blue-star.png"), colours, "a {} shape.\na {} thing."],
                  [str(EXAMPLES / "yellow-triangle.png"), "yellow triangle, yellow circle, blue triangle, blue circle",
                   "a {}."],
                  [str(EXAMPLES / "purple-heart.png"), "heart\nstar\ncross", "a photo of a {}.\na drawing of a {}."],
                  [str(EXAMPLES / "scene.png"), "one shape, two shapes, three shapes",
                   "a picture with {}."]],
        inputs=[image, labels, templates], outputs=[result, breakdown, warning], fn=classify,
        run_on_click=True, cache_examples=False, label="Examples that work on the embedded model (click one)",
        elem_id="classify-examples")

    _build_fused(page, image)


def _build_fused(page: Page, image: gr.Image) -> None:
    gr.Markdown("### Ask a question about the image: fused image+text classifiers\n"
                "Neither the image nor the question alone holds the answer. Each strategy fuses the image, colour and "
                "question branches differently; `image-only` and `text-only` are the baselines that see one side.")
    with gr.Row():
        with gr.Column():
            question = gr.Textbox(label="Question", value="what shape is at the top left?", elem_id="question")
            strategy = gr.Dropdown([*STRATEGIES, "seednet"], value="attention", label="Fusion strategy "
                                   "(seednet: the seed's CNN + GRU trained from scratch)")
            ask = gr.Button("Answer", variant="primary")
        fused = gr.Label(label="Answer", num_top_classes=5, elem_id="fused-answer")
        table = gr.Dataframe(headers=["strategy", "answer", "probability"], elem_id="fused-table",
                             label="What every strategy answers for this image and question")

    @friendly
    def answer(image: Image.Image | None, question: str, strategy: str):
        if image is None:
            raise gr.Error("Drop an image first, then ask your question.")
        every = page.engine.fused_answers(read_image(image), as_text(question, "The question"))
        if strategy not in every:
            raise gr.Error(f"Pick a strategy from the list: {', '.join(every)}.")
        rows = [[name, *next(iter(probs.items()))] for name, probs in every.items()]
        return every[strategy], [[n, a, round(p, 3)] for n, a, p in rows]

    ask.click(answer, [image, question, strategy], [fused, table], api_name="classify_fused")
    question.submit(answer, [image, question, strategy], [fused, table], api_name="classify_fused_on_enter",
                    api_visibility="private")
    gr.Examples(
        examples=[[str(EXAMPLES / "scene.png"), "what shape is at the top right?", "attention"],
                  [str(EXAMPLES / "scene.png"), "how many shapes are there?", "concat"],
                  [str(EXAMPLES / "blue-star.png"), "what colour is the star?", "gated"],
                  [str(EXAMPLES / "purple-heart.png"), "is there a purple heart?", "attention"]],
        inputs=[image, question, strategy], outputs=[fused, table], fn=answer, run_on_click=True,
        cache_examples=False, label="Questions that work on the embedded model (click one)", elem_id="fused-examples")
