"""`build_demo(engine)`: the page, tab by tab. Each tab's module wires its components to `mbm.Engine`;
no tensor math lives in `demo/`."""

from __future__ import annotations

import gradio as gr

from demo import classify_tab, explore_tab, gallery_tab, learn_tab, model_tab, search_tab
from demo.common import Page
from mbm.engine import Engine
from mbm.sessions import Session, SessionSpace
from mbm.uploads import Quota

ABOUT = """mbm embeds images and texts into one space with a CLIP-style model and searches them with FAISS.
**Search** finds images for text or for another image and ranks captions for an image; **Classify** turns labels
into prompts and picks the closest; **Explore** shows why: where images and texts land, how they match, what
approximate search and prompt wording change; **Gallery** lets you search your own images; **Learn** trains a small
model in front of you and walks through the pipeline; **Model** shows what is serving."""
# What Gradio's own styles get wrong for this page (the launch() that takes `css` is app.py's; this rides in the
# page): result captions (and the image->text table's) wrap instead of ending in "…" mid-word or being cut off
CSS = """
#mbm-style {display: none}
.gradio-container .mbm-tiles .caption-label {white-space: normal; max-width: calc(100% - 8px); opacity: .92;
  line-height: 1.2; overflow-wrap: break-word}
.gradio-container .mbm-fit .grid-wrap {min-height: 0; max-height: none}  /* as tall as its tiles, no blank below */
.gradio-container #captions td {white-space: normal; overflow-wrap: anywhere}  /* a long caption wraps, not cut */
"""


def build_demo(engine: Engine, local: bool = False, sessions: SessionSpace | None = None,
               quota: Quota | None = None) -> gr.Blocks:
    """The whole page for one engine.

    Args:
        engine: the model and galleries to serve.
        local: the page is only reachable from this computer, so its visitor is its owner: they may index a folder
            of the host by path, name files in queries (`@photo.jpg`) and switch the model (which may read any
            checkpoint path or download one). A public page (another address, `--share`, a Space) does none of it.
        sessions: where visitors' uploads live (default: a new space of this process in the engine's cache).
        quota: what one visitor's uploads may hold in all (default `Quota()`).
    """
    page = Page(engine, local=local, sessions=sessions, quota=quota or Quota())
    # delete_cache: every 10 minutes, the files Gradio keeps for the browser (uploads, result thumbnails) that are
    # older than an hour go; a visitor's private uploads must not linger there (docs/SECURITY.md)
    with gr.Blocks(title="mbm: multimodal model demo", delete_cache=(600, 3600)) as demo:
        header = gr.Markdown(page.header(), elem_id="header")
        gr.HTML("", head=f"<style>{CSS}</style>", elem_id="mbm-style")  # into the document's <head>, once
        gr.Markdown(ABOUT)
        # this visitor's gallery: None = the server's, else their Session (or a Folder, locally). When Gradio drops a
        # closed page's state (an hour later) the session ends if the unload handler has not ended it already; no
        # time-to-live here: the sweep of untouched folders counts searches as use, Gradio's would not
        choice = gr.State(None, delete_callback=lambda value: value.close() if isinstance(value, Session) else None)
        with gr.Tabs() as tabs:
            with gr.Tab("Search", id="search"):
                searching = search_tab.build(page, choice)
            with gr.Tab("Classify", id="classify"):
                classify_tab.build(page)
            with gr.Tab("Explore", id="explore") as explore:
                explore_tab.build(page, choice, explore)
            with gr.Tab("Gallery", id="gallery"):
                gallery_tab.build(page, choice, demo, searching)
            with gr.Tab("Learn", id="learn"):
                learn_tab.build(page, demo, tabs)
            with gr.Tab("Model", id="model"):
                model_tab.build(page, header)
    return demo
