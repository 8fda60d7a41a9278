"""What visitors type and get back, checked and shaped as every tab needs: query text, label and template lists,
result tiles. The numbers are the library's (`mbm.text`); this module turns them into sentences for the page."""

from __future__ import annotations

import re

import gradio as gr
from PIL import Image

from demo.common import Page
from demo.common import text as as_text
from mbm.errors import InputError
from mbm.search import Hit, Query
from mbm.text import MAX_TEMPLATES, MAX_TEXT_CHARS, SHARED_MAX_PROMPTS, check_prompts, clean_text
from mbm.text import SHARED_MAX_LABELS as MAX_LABELS

MAX_QUERY_CHARS = MAX_PROMPT_CHARS = MAX_TEXT_CHARS


def tiles(hits: list[Hit]) -> list[tuple[Image.Image, str]]:
    """`(thumbnail, "score · caption")` pairs for gr.Gallery (a video's moment: its best frame, "score · ▶ mm:ss-mm:ss ·
    caption"). Images, not paths: Gradio copies them to its own
    cache, so no folder of the host (or of another session) has to be opened to the web."""
    shown = []
    for h in hits:
        image = Image.open(h.thumbnail if h.thumbnail else h.path)
        image.draft("RGB", (256, 256))
        shown.append((image, f"{h.score:.3f} · {f'▶ {h.span} · ' if h.span else ''}{h.caption}"))
    return shown


def check_query(text: str | None, image: Image.Image | str | None,
                missing: str = "Type what you are looking for, or drop an image, then press Search.",
                local: bool = False) -> Query | None:
    """The query text parsed once (None when there is none but an image); a gr.Error saying `missing` when there is
    neither text nor image, when the text is too long, or when it names a file (`@photo.jpg`) and the page is not
    `local`: such terms read files of the host, which only its owner may do. A text that is not a query raises
    `Query.parse`'s InputError (callers are `friendly`)."""
    text = clean_text(as_text(text, "The query")).strip()
    if not text and image is None:
        raise gr.Error(missing)
    if len(text) > MAX_QUERY_CHARS:
        raise gr.Error(f"That query is {len(text):,} characters long; keep it under {MAX_QUERY_CHARS:,}.")
    if not text:
        return None
    query = Query.parse(text)
    if query.reads_files and not local:
        raise gr.Error("'@file' terms read files on the server, so they only work when mbm runs on your own "
                       "computer. Drop the image into the Image box instead.")
    return query


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
