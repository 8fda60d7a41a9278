"""What every tab shares: the engine, the visitor's own gallery, and turning library errors into gr.Error.

A visitor's gallery choice lives in a `gr.State` (None = the server's gallery), so one person switching
to their uploads never changes what anyone else sees.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr
from PIL import Image

from mbm.data.images import ImageError, load_image
from mbm.engine import Engine
from mbm.gallery import Gallery, GalleryLockedError
from mbm.models import WeightsUnavailableError

log = logging.getLogger(__name__)


@dataclass
class Page:
    """The page's server-side context, shared by every visitor (the per-visitor part is in gr.State)."""
    engine: Engine
    local: bool = False  # only reachable from this computer: index host folders, '@file' queries, switch models
    secret: bytes = field(default_factory=lambda: secrets.token_bytes(32))  # makes session folders unguessable

    def gallery(self, choice: dict | None, progress=None) -> Gallery:
        """The gallery a visitor searches: theirs if they chose one, else the server's."""
        if not choice:
            return self.engine.gallery
        if choice.get("home"):  # a session folder in use is not idle: the sweep goes by its age
            with contextlib.suppress(OSError):
                os.utime(choice["home"])
        try:
            return self.engine.gallery_at(choice["root"], choice.get("store"), progress=progress)
        except NotADirectoryError:  # their session folder was swept away
            raise gr.Error("Your uploaded gallery is gone (the session expired). Upload the images again.") from None

    def session_root(self) -> Path:
        return self.engine.config.cache_path()

    def header(self) -> str:
        enc = self.engine.encoder
        note = f"\n\n> {self.engine.notice}" if self.engine.notice else ""
        return (f"# mbm: see how image-text models work\nServing **{enc.name}** on {enc.device} "
                f"({enc.precision}), {enc.embed_dim}-d embeddings.{note}")


def image_input(**kwargs) -> gr.Image:
    """A `gr.Image` for visitors' uploads. Its value reaches the handler as a file path, which `read_image` decodes
    with mbm's loader (EXIF orientation, 16-bit and CMYK scaled, transparency on white, first frame of an animation).
    A file Gradio itself cannot open (empty, not an image, a decompression bomb) becomes a gr.Error that says what is
    wrong with it, instead of Gradio's message that the app "has raised an exception"."""
    image = gr.Image(type="filepath", image_mode=None, **kwargs)
    gradio_preprocess = image.preprocess  # opens the file with Pillow to check its mode

    def preprocess(payload):
        try:
            return gradio_preprocess(payload)
        except gr.Error:
            raise
        except Exception:
            read_image(payload.path, getattr(payload, "orig_name", None))  # raises the gr.Error that says why
            return str(payload.path)  # mbm's loader reads what Pillow's plain open could not

    image.preprocess = preprocess
    return image


def read_image(path: str | Path | None, name: str | None = None) -> Image.Image | None:
    """The RGB image of an uploaded file (None stays None); a file that is not a usable image is a gr.Error."""
    if path is None:
        return None
    try:
        return load_image(path, name=name or Path(path).name)
    except ImageError as e:
        raise gr.Error(_unreadable(e)) from None


def _unreadable(e: ImageError) -> str:
    return f"That image could not be read: {e}. Try a JPEG or PNG file."


def friendly(fn):
    """Library errors about people's input become gr.Error messages; nothing reaches them as a traceback."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except WeightsUnavailableError as e:
            raise gr.Error(f"{e}") from None
        except ImageError as e:
            raise gr.Error(_unreadable(e)) from None
        except KeyError as e:  # str() of a KeyError is the repr of its message
            raise gr.Error(str(e.args[0] if e.args else e)) from None
        except (ValueError, NotADirectoryError, FileNotFoundError, PermissionError, GalleryLockedError) as e:
            raise gr.Error(str(e)) from None
    return wrapper
