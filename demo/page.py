"""A first page: zero-shot classification with the active model.

The full page (search, gallery, explore, learn) arrives with the engine; this one already
follows the rules: one function per event, `gr.Error` for bad input, a named API endpoint.
"""

from __future__ import annotations

import re

import gradio as gr
from PIL import Image

from mbm.engine import Engine

MAX_LABELS = 100  # the page keeps a class demo readable; the library allows more


def parse_labels(text: str) -> list[str]:
    """Labels from one-per-line or comma-separated text, stripped, duplicates dropped, order kept."""
    labels = [s.strip() for s in re.split(r"[\n,]", text or "") if s.strip()]
    return list(dict.fromkeys(labels))


def build_demo(engine: Engine) -> gr.Blocks:
    encoder = engine.encoder

    def classify(image: Image.Image | None, labels_text: str) -> dict[str, float]:
        if image is None:
            raise gr.Error("Drop an image first, then press Classify.")
        labels = parse_labels(labels_text)
        if len(labels) < 2:
            raise gr.Error("Give at least two labels, one per line or separated by commas.")
        if len(labels) > MAX_LABELS:
            raise gr.Error(f"At most {MAX_LABELS} labels, please; you gave {len(labels)}.")
        return engine.zero_shot(image, labels).probs

    with gr.Blocks(title="mbm: multimodal model demo") as demo:
        gr.Markdown(f"# mbm\nZero-shot classification with **{encoder.name}** "
                    f"on {encoder.device} ({encoder.precision}).")
        with gr.Row():
            image = gr.Image(type="pil", label="Image")
            with gr.Column():
                labels = gr.Textbox(label="Labels (one per line or comma-separated)",
                                    value="circle, square, triangle, star, hexagon, cross, diamond, heart", lines=3)
                button = gr.Button("Classify", variant="primary")
        result = gr.Label(label="Probabilities", num_top_classes=5)
        button.click(classify, [image, labels], result, api_name="classify")
    return demo
