"""The page's video views: a search hit's moment played from where it matches (a short clip cut around it with
PyAV), and zero-shot over time (a video's frames classified, each label's probability drawn as a timeline)."""

from __future__ import annotations

import hashlib
import tempfile
import warnings
from pathlib import Path

import gradio as gr

from demo.charts import timeline_svg
from demo.common import Page, friendly
from demo.queries import parse_prompts
from mbm import video
from mbm.classify import DEFAULT_TEMPLATES
from mbm.clips import cut_clip
from mbm.models import ASSETS
from mbm.search import Hit

EXAMPLE = ASSETS / "gallery" / "videos" / "shapes-example.mp4"
PAGE_LIMITS = video.Limits(max_seconds=600.0)  # a visitor's video to classify: at most 10 minutes
MAX_CLIPS = 64  # clips kept in the page's folder; older ones go (Gradio has copied them to its cache by then)
KINDS = "an MP4, WebM, MOV or MKV video, or an animated GIF"


def moment(hit: Hit) -> dict | None:
    """What the player needs of a video's moment (and its item id, for "more like this"); None for an image."""
    if hit.start is None:
        return None
    return dict(id=hit.id, path=str(hit.path), start=hit.start, end=hit.end, best=hit.best, where=hit.where)


def moment_of(hits: list[Hit]) -> dict | None:
    """The best video moment among search hits (what the player shows), or None when no hit is a video."""
    return next((m for h in hits if (m := moment(h)) is not None), None)


def tile_keys(hits: list[Hit]) -> list[int | dict]:
    """Per result tile: an image's item id (a click finds more like it), or a video's moment (a click plays it)."""
    return [moment(h) or h.id for h in hits]


class Clips:
    """Clips cut for the page, in a folder of the system's temp directory (from where Gradio may serve a file)."""

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="mbm-clips-"))

    def cut(self, moment: dict) -> Path:
        path = Path(moment["path"])
        stamp = f"{path}|{path.stat().st_mtime_ns}|{moment['start']}|{moment['end']}"
        out = self.folder / f"{hashlib.sha1(stamp.encode()).hexdigest()[:16]}.mp4"
        if not out.is_file():
            cut_clip(path, moment["start"], moment["end"], out)
            for old in sorted(self.folder.glob("*.mp4"), key=lambda p: p.stat().st_mtime)[:-MAX_CLIPS]:
                old.unlink(missing_ok=True)
        return out


def player() -> tuple[gr.Video, gr.Markdown]:
    """The Search tab's player of the best video moment, hidden until a search finds one."""
    line = gr.Markdown(elem_id="moment-line")
    return gr.Video(label="The best video moment", visible=False, interactive=False, elem_id="moment-video",
                    height=300), line


def show_moment_handler(page: Page, clips: Clips):
    @friendly
    def show_moment(moment: dict | None):
        """The clip around the best video moment of the last search (hidden when it found none)."""
        if not moment:
            return gr.Video(value=None, visible=False), ""
        clip = clips.cut(moment)
        clock = lambda s: f"{int(s) // 60:02d}:{int(s) % 60:02d}"
        line = (f"▶ **{moment['where']}**: it matches best at {clock(moment['best'])}; the clip plays from "
                f"{clock(max(0.0, moment['start'] - 1))}, a second before the moment.")
        return gr.Video(value=str(clip), visible=True, label=moment["where"]), line
    return show_moment


def build_classify_video(page: Page, labels: gr.Textbox, templates: gr.Textbox) -> None:
    """Zero-shot over time, under the Classify tab's image: a video and the tab's labels and templates."""
    with gr.Accordion("Zero-shot over time: classify a video frame by frame", open=False, elem_id="classify-video"):
        with gr.Row():
            clip = gr.Video(label=f"Video ({KINDS}; at most 10 minutes)", sources=["upload"], height=260,
                            elem_id="classify-video-input")
            with gr.Column():
                gr.Markdown("One frame a second is classified among the labels above, with the templates above; "
                            "watch a label rise as its object enters.")
                button = gr.Button("Classify the video", variant="primary")
        chart = gr.HTML(elem_id="classify-timeline")
        table = gr.Dataframe(label="Probabilities per frame", visible=False, elem_id="classify-video-table")
        note = gr.Markdown()
    outputs = [chart, table, note]
    event = button.click(_classify_video(page), [clip, labels, templates], outputs, api_name="classify_video",
                         concurrency_id="prompts", concurrency_limit=1)
    event.failure(lambda: ("", gr.Dataframe(visible=False), ""), None, outputs, api_visibility="private")
    gr.Examples([[str(EXAMPLE), "circle, square, star, triangle", "\n".join(DEFAULT_TEMPLATES)]],
                [clip, labels, templates], outputs, fn=_classify_video(page), run_on_click=True, cache_examples=False,
                label="The built-in example: a circle enters at 1 s, leaves at 5 s, comes back at 10 s",
                elem_id="classify-video-examples")


def _classify_video(page: Page):
    @friendly
    def classify_video(path: str | None, labels_text: str, templates_text: str, request: gr.Request):
        if not path:
            raise gr.Error(f"Drop a video first ({KINDS}), then press Classify the video.")
        labels, templates = parse_prompts(labels_text, templates_text, page, request.session_hash)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                timeline = page.engine.zero_shot_video(path, labels, templates, limits=PAGE_LIMITS)
        except video.VideoError as e:
            raise gr.Error(f"{e} Try {KINDS}.") from None
        rows = [[round(float(t), 2), *(round(float(p), 3) for p in row)]
                for t, row in zip(timeline.times, timeline.probs)]
        top = [timeline.labels[j] for j in timeline.probs.argmax(axis=1)]
        changes = sum(a != b for a, b in zip(top, top[1:]))
        note = (f"{len(rows)} frames; the most probable label changes {changes} times"
                + (f"\n\n{beyond}" if (beyond := page.engine.beyond(*labels, *templates)) else ""))
        return (timeline_svg(timeline.times, timeline.labels, timeline.probs),
                gr.Dataframe(value=rows, headers=["seconds", *timeline.labels], visible=True), note)
    return classify_video
