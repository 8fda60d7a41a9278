"""What every tab shares: the engine, the visitor's own gallery, and turning library errors into gr.Error.

A visitor's gallery choice lives in a `gr.State` (None = the server's gallery), so one person switching
to their uploads never changes what anyone else sees.
"""

from __future__ import annotations

import functools
import logging
import secrets
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr

from mbm.data.images import ImageError
from mbm.engine import Engine
from mbm.gallery import Gallery
from mbm.models import WeightsUnavailableError

log = logging.getLogger(__name__)


@dataclass
class Page:
    """The page's server-side context, shared by every visitor (the per-visitor part is in gr.State)."""
    engine: Engine
    allow_folders: bool = False  # may visitors index a folder of the host by path? Only for local use.
    allow_model_switch: bool = True  # the model is shared by all visitors: a public Space keeps it fixed
    secret: bytes = field(default_factory=lambda: secrets.token_bytes(32))  # makes session folders unguessable

    def gallery(self, choice: dict | None, progress=None) -> Gallery:
        """The gallery a visitor searches: theirs if they chose one, else the server's."""
        if not choice:
            return self.engine.gallery
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
            raise gr.Error(f"That image could not be read: {e}. Try a JPEG or PNG file.") from None
        except (ValueError, KeyError, NotADirectoryError, FileNotFoundError) as e:
            raise gr.Error(str(e).strip("'\"")) from None
    return wrapper
