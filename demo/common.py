"""What every tab shares: the engine, the visitor's own gallery, and turning library errors into gr.Error.

A visitor's gallery choice lives in a `gr.State`: None for the server's gallery, their `mbm.sessions.Session` for
their uploads, or a `Folder` of the host on a local page; so one person switching never changes what anyone else
sees.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr
from PIL import Image

from demo.server import PromptBudget
from mbm.data.images import ImageError, load_image
from mbm.engine import Engine
from mbm.errors import InputError, StoreDamagedError
from mbm.gallery import Gallery, GalleryLockedError
from mbm.models import ASSETS, WeightsFileError, WeightsUnavailableError
from mbm.sessions import Session, SessionSpace
from mbm.text import SHARED_PROMPTS_PER_MINUTE
from mbm.uploads import Quota

log = logging.getLogger(__name__)
EXAMPLES = ASSETS / "examples"  # pictures the page's examples use


@dataclass
class Page:
    """The page's server-side context, shared by every visitor (the per-visitor part is in gr.State)."""
    engine: Engine
    local: bool = False  # only reachable from this computer: index host folders, '@file' queries, switch models
    sessions: SessionSpace | None = None  # this process's visitors' folders (default: a new space in the cache)
    quota: Quota = field(default_factory=Quota)  # what one visitor's uploads may hold in all
    budget: PromptBudget = field(default_factory=lambda: PromptBudget(SHARED_PROMPTS_PER_MINUTE))  # per session

    def __post_init__(self) -> None:
        if self.sessions is None:
            self.sessions = SessionSpace(self.engine.config.cache_path())

    def gallery(self, choice: Session | Folder | None, progress=None) -> Gallery:
        """The gallery a visitor searches: theirs if they chose one, else the server's. A session whose folder is
        gone raises `SessionGone`, which `friendly` shows."""
        return self.engine.gallery if choice is None else choice.gallery(progress)

    def session(self, request: gr.Request) -> Session:
        """The visitor's own session (its folder is made by their first upload)."""
        return self.sessions.session(request.session_hash, self.engine, self.quota)

    def header(self) -> str:
        enc = self.engine.encoder
        note = f"\n\n> {self.engine.notice}" if self.engine.notice else ""
        return (f"# mbm: see how image-text models work\nServing **{enc.name}** on {enc.device} "
                f"({enc.precision}), {enc.embed_dim}-d embeddings.{note}")


def searching_line(gallery: Gallery, choice: Session | Folder | None) -> str:
    """One line saying which gallery a visitor's searches go to, and how many images it holds."""
    whose = ("the server's gallery" if choice is None else "your uploads" if isinstance(choice, Session)
             else f"your folder `{gallery.root.name}`")
    return f"Searching **{whose}** ({len(gallery):,} images) · change it in the Gallery tab"


@dataclass(frozen=True)
class Folder:
    """A folder of the host, indexed by path by the page's owner (local pages only)."""
    engine: Engine
    root: Path
    store: Path

    def gallery(self, progress=None) -> Gallery:
        return self.engine.gallery_at(self.root, self.store, progress=progress)


def read_image(path: str | Path | Image.Image | None, name: str | None = None) -> Image.Image | None:
    """The RGB image of an uploaded file (None stays None, a picture already read stays as it is); a file that is not
    a usable image is a gr.Error."""
    if path is None or isinstance(path, Image.Image):
        return path
    try:
        return load_image(path, name=name or Path(path).name)
    except ImageError as e:
        raise quiet(gr.Error(_unreadable(e)), "reading an image") from None


def read_drawing(value: dict | None, missing: str) -> Image.Image:
    """The picture drawn on a `demo.components.Drawing` (strokes on white); a gr.Error saying `missing` when there is
    no drawing or the canvas is blank."""
    composite = (value or {}).get("composite") if isinstance(value, dict) else None
    image = read_image(composite, "your drawing") if composite else None
    if image is None or image.convert("L").getextrema()[0] >= 250:  # nothing darker than the paper
        raise quiet(gr.Error(missing), "reading an image")
    return image


def _unreadable(e: ImageError) -> str:
    return f"That image could not be read: {e}. Try a JPEG or PNG file."


BUG = ("Something went wrong on the server: this is a bug in mbm, and it has been logged. Try again, or try other "
       "input.")


def friendly(fn):
    """Errors meant for people become a gr.Error that says what to do (`message_for`); nothing reaches the page as a
    traceback, and no message names a path of the server unless the page is the owner's own. The server's log gets
    one line per refusal (a real bug still gets its traceback, from `message_for`)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error as e:
            raise quiet(e, fn.__name__) from None
        except Exception as e:
            raise quiet(gr.Error(message_for(e, fn.__name__)), fn.__name__) from None
    return wrapper


def quiet(error: gr.Error, where: str) -> gr.Error:
    """`error` logged as one line, and told not to make Gradio's queue print its traceback: a visitor's mistake
    is not the server's, and a page under a classroom's hands would otherwise fill the log with tracebacks."""
    error.print_exception = False
    first = (str(error.message or "").splitlines() or [""])[0][:300]
    logging.getLogger("mbm.page").info("refused in %s: %s", where, first)
    return error


def message_for(e: Exception, where: str = "a handler") -> str:
    """The sentence a visitor sees for an exception: the library's own words for their input, plain words for the
    server's state, and for anything else (a bug) a short apology while the log gets the traceback."""
    if isinstance(e, ImageError):
        return _unreadable(e)
    if isinstance(e, (InputError, WeightsUnavailableError, WeightsFileError)):
        return str(e)
    if isinstance(e, GalleryLockedError):
        return "This gallery is being written by another program right now; try again in a minute."
    if isinstance(e, StoreDamagedError):
        log.error("%s: %s", where, e)
        return ("This gallery's index on the server is damaged, so it cannot be searched now. If it held your "
                "uploads, upload them again; otherwise tell whoever runs this page.")
    if isinstance(e, OSError):  # a file gone under us (a swept session) or unreadable: its path is not for visitors
        log.warning("%s: %s", where, e)
        return ("A file this needed is gone from the server (uploads are deleted when a session ends or expires). "
                "Upload your images again, or go back to the server's gallery.")
    log.exception("bug in %s", where)
    return BUG


def no_badge_after_failure(event, outputs: list) -> None:
    """After `event` fails, a step that leaves its `outputs` as they are: Gradio keeps an "Error" badge over every
    output of a failed event until another event writes to it, so without this the badges outlive the toast."""
    event.failure(lambda: (gr.skip(),) * len(outputs) if len(outputs) > 1 else gr.skip(), None, outputs,
                  api_visibility="private")


def text(value, what: str) -> str:
    """`value` as text (None is empty text); anything else an API call may send is a gr.Error naming the field."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise quiet(gr.Error(f"{what} must be text, not {type(value).__name__}."), what)
    return value


def number(value, what: str, lo: float, hi: float, integer: bool = False) -> float | int:
    """`value` as a number from `lo` to `hi` (an int if `integer`), for values an API call may send as anything:
    None, text, NaN or infinity become a gr.Error that says what to send."""
    kind = "a whole number" if integer else "a number"
    try:
        x = float(value)
    except (TypeError, ValueError):
        x = None
    if isinstance(value, bool) or x is None or not lo <= x <= hi:  # NaN fails every comparison
        shown = repr(value) if not isinstance(value, str) else f"'{value[:20]}{'…' if len(value) > 20 else ''}'"
        raise quiet(gr.Error(f"{what} must be {kind} between {lo:g} and {hi:g}, not {shown}."), what)
    return round(x) if integer else x
