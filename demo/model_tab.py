"""The Model tab: what is serving, and loading another model on demand.

The model is one per server (it is most of the memory), so switching changes it for every visitor;
on a public Space the picker is off and the page says so.
"""

from __future__ import annotations

import gradio as gr

from demo.common import Page, friendly
from mbm.models import KNOWN_MODELS, is_cached


def model_line(page: Page) -> str:
    enc = page.engine.encoder
    return (f"**Active model:** `{enc.name}` · device **{enc.device}** · precision **{enc.precision}** · "
            f"{enc.embed_dim}-d embeddings · {enc.image_size}-px images · {enc.context_length}-token texts")


def _choices() -> list[tuple[str, str]]:
    marks = {m.spec: ("ships with mbm" if m.offline else "cached" if is_cached(m.spec) else "needs a download")
             for m in KNOWN_MODELS}
    return [(f"{m.spec} ({marks[m.spec]}): {m.about.replace(f' ({marks[m.spec]})', '')}", m.spec)
            for m in KNOWN_MODELS]  # the mark once, where a model's own words say it too


def build(page: Page, header: gr.Markdown) -> None:
    info = gr.Markdown(model_line(page), elem_id="model-info")
    with gr.Row():
        picker = gr.Dropdown(_choices(), value=page.engine.encoder.name, allow_custom_value=True, scale=3,
                             label="Model (any open_clip ARCH:TAG, or a local checkpoint folder, also works)",
                             interactive=page.local, elem_id="model-picker")
        button = gr.Button("Load", variant="primary", interactive=page.local, scale=1)
    gr.Markdown("Loading a model changes it for everyone using this server; galleries are re-indexed for it "
                "once, and keep the embeddings of every model they have seen." if page.local else
                "This public page keeps its model fixed; run mbm on your own computer to switch models.")

    @friendly
    def load(spec: str, progress=gr.Progress()):
        """Load another model for this server (the current one stays if it cannot be loaded)."""
        if not page.local:
            raise gr.Error("This server keeps its model fixed.")
        spec = (spec or "").strip()
        if not spec:
            raise gr.Error("Pick a model first.")
        if spec == page.engine.encoder.name:
            return model_line(page), page.header()
        progress(0.1, desc=f"loading {spec}")
        page.engine.use_model(spec, progress=lambda d, t, w: progress(0.3 + 0.7 * d / max(t, 1), desc=w))
        return model_line(page), page.header()

    as_before = lambda: (model_line(page), page.header())  # the model serving still: no "Error" badge over it
    button.click(load, picker, [info, header], api_name="load_model", concurrency_id="model",
                 concurrency_limit=1).failure(as_before, None, [info, header], api_visibility="private")
