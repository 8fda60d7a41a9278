"""The Gallery tab: what is being searched, and switching to a visitor's own images.

Uploads go to a folder of that visitor's session only (named by an HMAC of the session id, so it cannot be
guessed); it is removed when the page is closed, and swept at start-up if the process died before.
The server's gallery (built-in, or `--gallery`) is never written to by visitors.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from demo.common import Folder, Page, friendly, searching_line
from mbm.data.images import IMAGE_SUFFIXES
from mbm.gallery import Gallery
from mbm.sessions import Session
from mbm.sync import SyncReport
from mbm.uploads import Intake
from mbm.video import VIDEO_SUFFIXES

KINDS = "JPEG, PNG or WebP images, MP4, WebM, MOV or MKV videos"


def gallery_line(gallery: Gallery, own: bool) -> str:
    kind = "your uploads (only you see them)" if own else "the server's gallery (read-only)"
    errors = len(gallery.errors())
    return (f"**Searching:** {kind}: `{gallery.root.name}`, **{len(gallery)}** images"
            + (f" ({errors} unreadable files skipped)" if errors else "")
            + f" · model **{gallery.encoder.name}** · index {gallery.index_kind()}")


def _skipped_rows(skipped: list[tuple[str, str]]) -> list[list[str]]:
    return [[name, reason] for name, reason in skipped]


def unreadable(intake: Intake, report: SyncReport, root: Path) -> list[tuple[str, str]]:
    """The images of this upload that could not be read, `(name, why)`: the sync reports every unreadable file of
    the folder, and those of earlier uploads were told already."""
    names = {p.resolve().relative_to(root.resolve()).as_posix(): p.name for p in intake.added}
    return [(names[path], why) for path, why in report.skipped if path in names]


def check_readable(intake: Intake, failed: list[tuple[str, str]], gallery: Gallery) -> None:
    """A gr.Error saying so when no image of this upload could be read, or the visitor's gallery holds none: they
    stay on the gallery they were searching rather than switch to an empty one."""
    images = [p for p in intake.added if p.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES]
    if images and len(failed) == len(images):
        why = "; ".join(r if r.startswith(n) else f"{n}: {r}" for n, r in failed[:3]) + ("; …" * (len(failed) > 3))
        raise gr.Error(f"None of the {len(images)} files could be read: {why}. Upload {KINDS}, or a .zip of them.")
    if not len(gallery):
        raise gr.Error(f"{intake.summary()}, and your uploads hold no image or video that can be read yet. Upload "
                       f"{KINDS}, or a .zip of them.")


@dataclass
class _Gallery:
    """The tab's components, in the order the page shows them."""

    info: gr.Markdown  # which gallery this visitor searches
    files: gr.File
    index_button: gr.Button
    builtin_button: gr.Button
    folder: gr.Textbox  # local use only
    folder_button: gr.Button
    summary: gr.Markdown
    skipped: gr.Dataframe
    refresh: gr.Button


def build(page: Page, choice: gr.State, demo: gr.Blocks, where: gr.Markdown) -> None:
    """The tab; `where` is the Search tab's line saying which gallery is searched, kept in step here."""
    ui = _layout(page)
    _wire(page, ui, choice, where)

    def forget(request: gr.Request) -> None:
        """The page was closed: the visitor's uploads and their index go. (Gradio's own copies of the uploaded files
        stay until its cache sweep, an hour: Gradio shares one copy between visitors who upload the same bytes.)"""
        page.session(request).close()

    demo.unload(forget)


def _layout(page: Page) -> _Gallery:
    info = gr.Markdown(gallery_line(page.engine.gallery, own=False), elem_id="gallery-info")
    with gr.Row():
        with gr.Column():
            files = gr.File(label="Your images and videos, or a .zip of them", file_count="multiple",
                            file_types=["image", *sorted(VIDEO_SUFFIXES), ".zip", ".txt"], elem_id="uploads")
            index_button = gr.Button("Index my uploads", variant="primary")
        with gr.Column():
            builtin_button = gr.Button("Back to the server's gallery")
            folder = gr.Textbox(label="Or a folder on this computer (local use only)", visible=page.local,
                                placeholder="~/Pictures")
            folder_button = gr.Button("Index this folder", visible=page.local)
    summary = gr.Markdown()
    skipped = gr.Dataframe(headers=["file", "why it was skipped"], label="Skipped", visible=False,
                           elem_id="gallery-skipped")
    refresh = gr.Button("Refresh", size="sm")
    return _Gallery(info, files, index_button, builtin_button, folder, folder_button, summary, skipped, refresh)


def _wire(page: Page, ui: _Gallery, choice: gr.State, where: gr.Markdown) -> None:
    """Each switch returns (choice, info, summary, skipped); then the Search tab's line follows, or, after a
    failure, every line is put back as it was."""
    index_uploads, index_folder, use_server_gallery = _switches(page)
    gallery_info, refresh_where, as_before = _lines(page)
    outputs = [choice, ui.info, ui.summary, ui.skipped]
    for event in (ui.index_button.click(index_uploads, ui.files, outputs, api_name="index_uploads",
                                        concurrency_id="indexing", concurrency_limit=1),
                  ui.folder_button.click(index_folder, ui.folder, outputs, api_name="index_folder",
                                         concurrency_id="indexing", concurrency_limit=1,
                                         api_visibility="public" if page.local else "private")):
        event.failure(as_before, choice, [ui.info, where, ui.summary, ui.skipped], api_visibility="private")
        event.success(refresh_where, choice, where, api_visibility="private")
    ui.builtin_button.click(use_server_gallery, None, outputs, api_name="use_server_gallery").success(
        refresh_where, choice, where, api_visibility="private")
    ui.refresh.click(gallery_info, choice, ui.info, api_name="gallery_info").success(
        refresh_where, choice, where, api_visibility="private")


def _switches(page: Page):
    """`(index_uploads, index_folder, use_server_gallery)`: the ways to change which gallery a visitor searches."""

    def progress_of(progress: gr.Progress):
        return lambda done, total, what: progress(done / max(total, 1), desc=what)

    @friendly
    def index_uploads(paths: list[str] | None, request: gr.Request, progress=gr.Progress()):
        if not paths:
            raise gr.Error("Choose some images (or a .zip) first, then press Index my uploads.")
        session = page.session(request)
        gallery, intake, report = session.add(paths, progress=progress_of(progress))
        failed = unreadable(intake, report, gallery.root)
        check_readable(intake, failed, gallery)
        why = intake.skipped + failed
        videos = f" and {report.frames} frames of {report.videos} videos" if report.videos else ""
        text = (f"{intake.summary()}; indexed {report.encoded} new images{videos} in {report.seconds:.1f} s. "
                f"Your gallery now has **{len(gallery)}** searchable images{' and videos' if videos else ''}.")
        return session, gallery_line(gallery, own=True), text, gr.Dataframe(value=_skipped_rows(why), visible=bool(why))

    @friendly
    def index_folder(path: str, progress=gr.Progress()):
        if not page.local:
            raise gr.Error("Indexing a folder by path is only available when mbm runs on your own computer.")
        if not (path or "").strip():
            raise gr.Error("Type the path of a folder of images, e.g. ~/Pictures.")
        try:
            gallery, report = page.engine.open_gallery(Path(path.strip()).expanduser(),
                                                       progress=progress_of(progress), activate=False)
        except (FileNotFoundError, NotADirectoryError, PermissionError) as e:  # the owner's own path: say which
            raise gr.Error(str(e)) from None
        return (Folder(page.engine, gallery.root, gallery.store), gallery_line(gallery, own=True), report.summary(),
                gr.Dataframe(value=_skipped_rows(report.skipped), visible=bool(report.skipped)))

    def use_server_gallery():
        return None, gallery_line(page.engine.gallery, own=False), "", gr.Dataframe(visible=False)

    return index_uploads, index_folder, use_server_gallery


def _lines(page: Page):
    """`(gallery_info, refresh_where, as_before)`: the lines that say which gallery is searched, redrawn."""

    @friendly
    def gallery_info(choice: Session | Folder | None) -> str:
        """Which gallery this session searches, its size, model and index type."""
        return gallery_line(page.gallery(choice), own=choice is not None)

    @friendly
    def refresh_where(choice: Session | Folder | None) -> str:
        """The Search tab's line, once the gallery changed (a step of its own: the endpoints' outputs stay)."""
        return searching_line(page.gallery(choice), choice)

    @friendly
    def as_before(choice: Session | Folder | None):
        """After a failed upload or folder: the lines as they were, with no "Error" badge left over them."""
        gallery = page.gallery(choice)
        return (gallery_line(gallery, own=choice is not None), searching_line(gallery, choice), "",
                gr.Dataframe(visible=False))

    return gallery_info, refresh_where, as_before
