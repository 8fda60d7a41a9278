"""The Classify tab: zero-shot classification with editable prompt templates and a per-template breakdown;
then a question about the same image answered by the fused image+text heads, every strategy side by side."""

from __future__ import annotations

import warnings

import gradio as gr
from PIL import Image

from demo.common import EXAMPLES, Page, friendly, read_drawing, read_image
from demo.common import text as as_text
from demo.components import Drawing, Picture
from demo.queries import parse_prompts
from demo.video_views import build_classify_video
from mbm.classify import DEFAULT_TEMPLATES
from mbm.fusion import STRATEGIES


def build(page: Page) -> None:
    image, drawing, draw_button, labels, templates, button = _inputs()
    result = gr.Label(label="Probabilities (prompt ensemble)", num_top_classes=5, elem_id="zero-shot")
    # the page's width, not half of it: a column per label; hidden until there is something to show in it
    breakdown = gr.Dataframe(label="What each template alone says", elem_id="per-template", visible=False)
    warning = gr.Markdown()
    classify, classify_drawing = _handlers(page)
    outputs = [result, breakdown, warning]
    cleared = lambda: (None, gr.Dataframe(visible=False), "")  # no "Error" badge left over an older answer
    for event in (button.click(classify, [image, labels, templates], outputs, api_name="classify",
                               concurrency_id="prompts", concurrency_limit=1),  # one at a time: may take a second
                  draw_button.click(classify_drawing, [drawing, labels, templates], outputs,
                                    api_name="classify_drawing", concurrency_id="prompts", concurrency_limit=1)):
        event.failure(cleared, None, outputs, api_visibility="private")
    _examples(classify, [image, labels, templates], outputs)
    build_classify_video(page, labels, templates)

    _build_fused(page, image)


def _inputs() -> tuple[Picture, Drawing, gr.Button, gr.Textbox, gr.Textbox, gr.Button]:
    """`(image, drawing, draw_button, labels, templates, button)`: the picture on the left, the prompts on the right."""
    with gr.Row():
        with gr.Column():
            image = Picture(label="Image", height=260, elem_id="classify-image")
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
    return image, drawing, draw_button, labels, templates, button


def _handlers(page: Page):
    """`(classify, classify_drawing)`: each returns (probabilities, per-template table, notes)."""

    @friendly
    def classify(image: Image.Image | None, labels_text: str, templates_text: str, request: gr.Request):
        if image is None:
            raise gr.Error("Drop an image first, then press Classify.")
        labels, templates = parse_prompts(labels_text, templates_text, page, request.session_hash)
        with warnings.catch_warnings():  # the result lists truncated prompts; the page shows them itself
            warnings.simplefilter("ignore", UserWarning)
            out = page.engine.zero_shot(read_image(image), labels, templates)
        rows = [[t, *(round(out.per_template[t][label], 3) for label in out.probs)] for t in out.per_template]
        table = gr.Dataframe(value=rows, headers=["template", *out.probs], visible=True)
        notes = [f"⚠️ {len(out.truncated)} prompt(s) are longer than the model's "
                 f"{page.engine.encoder.context_length} tokens and were cut short, e.g. “{out.truncated[0][:60]}…”"
                 if out.truncated else "", page.engine.beyond(*labels, *templates) or ""]
        return out.probs, table, "\n\n".join(n for n in notes if n)

    @friendly
    def classify_drawing(drawing, labels_text: str, templates_text: str, request: gr.Request):
        picture = read_drawing(drawing, "Draw something on the canvas first, then press Classify my drawing.")
        return classify(picture, labels_text, templates_text, request)

    return classify, classify_drawing


def _examples(classify, inputs: list, outputs: list) -> None:
    """One click runs an example that works on the embedded model."""
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
        inputs=inputs, outputs=outputs, fn=classify,
        run_on_click=True, cache_examples=False, label="Examples that work on the embedded model (click one)",
        elem_id="classify-examples")


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
    note = gr.Markdown(elem_id="fused-note")
    table = gr.Dataframe(headers=["strategy", "answer", "probability", "trust", "reads"], elem_id="fused-table",
                         label="What every strategy answers for this image and question (reads: the features it sees)")
    said = gr.State("")  # the note of the last answer: a State, so the API's outputs stay (label, table)

    def explain(every, strategy: str) -> str:
        served, why = page.engine.encoder.name, every.note(strategy)
        lines = [f"⚠️ {why[0].upper()}{why[1:]}." if every.out_of_scope else f"⚠️ {strategy} is {why}."] if why else []
        lines.append("SeedNet reads the pixels itself, with no backbone." if strategy == "seednet" else
                     f"Answered by heads over **{every.backbone}**" + (
                         f": no heads are trained for {served} (`python -m mbm train-fusion --backbone {served}`)."
                         if every.backbone != served else "."))
        return "\n\n".join(lines)

    @friendly
    def answer(image: Image.Image | None, question: str, strategy: str):
        if image is None:
            raise gr.Error("Drop an image first, then ask your question.")
        every = page.engine.fused_answers(read_image(image), as_text(question, "The question"))
        if strategy not in every:
            raise gr.Error(f"Pick a strategy from the list: {', '.join(every)}.")
        trust = lambda name: "out of scope" if every.out_of_scope else "unsure" if every.unsure(name) else ""
        reads = lambda name: "pixels" if name == "seednet" else every.backbone
        rows = [[name, *next(iter(probs.items())), trust(name), reads(name)] for name, probs in every.items()]
        shown = "out of scope" if every.out_of_scope else every[strategy]  # a flag, not a confident answer
        return shown, [[n, a, round(p, 3), t, r] for n, a, p, t, r in rows], explain(every, strategy)

    outputs = [fused, table, said]
    event = gr.on([ask.click, question.submit], answer, [image, question, strategy], outputs,
                  api_name="classify_fused")
    event.failure(lambda: (None, None, ""), None, outputs, api_visibility="private")  # no stale answer or badge
    said.change(lambda text: text, said, note, api_visibility="private")
    gr.Examples(
        examples=[[str(EXAMPLES / "scene.png"), "what shape is at the top right?", "attention"],
                  [str(EXAMPLES / "scene.png"), "how many shapes are there?", "concat"],
                  [str(EXAMPLES / "blue-star.png"), "what colour is the star?", "gated"],
                  [str(EXAMPLES / "scene.png"), "what colour is the star?", "attention"],
                  [str(EXAMPLES / "purple-heart.png"), "is there a purple heart?", "attention"]],
        inputs=[image, question, strategy], outputs=outputs, fn=answer, run_on_click=True,
        cache_examples=False, label="Questions that work on the embedded model (click one)", elem_id="fused-examples")
