"""Visitors' sessions: one `Session` owns a visitor's folder, uploads, gallery, quota, last use and close; a
`SessionSpace` holds every session of this process, whose they are, and their removal.

A folder is named by an HMAC of the session id with a per-process secret, so knowing (or guessing) a
session id does not tell anyone where its files are. Every process keeps its visitors' folders under a
folder of its own (`SessionSpace`), which it holds a lock on while it lives: a second process on the same
cache leaves them alone, and removes only the spaces of processes that are gone. Folders go when the session
ends; a sweep removes those untouched for too long, sooner when no page of theirs is open.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import os
import secrets
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from mbm.errors import InputError
from mbm.uploads import Intake, Quota, UploadLimits, take_uploads

if TYPE_CHECKING:
    from mbm.engine import Engine
    from mbm.gallery import Gallery, SyncReport

try:
    import fcntl
except ImportError:  # Windows: a space's owner is known by its pid instead
    fcntl = None

logger = logging.getLogger(__name__)


def session_folder(root: str | os.PathLike, session_hash: str, secret: bytes) -> Path:
    """`root/sessions/<HMAC-SHA256(secret, session_hash)[:32]>`, not created: unguessable without the secret.

    Args:
        root: the folder that holds all sessions.
        session_hash: the visitor's session id (Gradio's `request.session_hash`).
        secret: the server's secret key.
    """
    if not isinstance(session_hash, str) or not session_hash:
        raise ValueError(f"session_hash must be a non-empty string, got {session_hash!r}")
    if not isinstance(secret, (bytes, bytearray)) or not secret:
        kind = "empty bytes" if isinstance(secret, (bytes, bytearray)) else type(secret).__name__
        raise ValueError(f"secret must be non-empty bytes, got {kind}")  # never echo a secret
    digest = hmac.new(bytes(secret), session_hash.encode(), hashlib.sha256).hexdigest()[:32]
    return Path(root) / "sessions" / digest


def remove_folder(path: str | os.PathLike) -> None:
    """Delete a session folder and everything in it; a missing folder is fine.

    Raises:
        ValueError: the folder (symlinks resolved) is not inside a folder named "sessions".
    """
    if "sessions" not in Path(path).resolve().parts[:-1]:
        raise ValueError(f"refusing to delete {str(path)!r}: it is not inside a 'sessions' folder")
    try:
        shutil.rmtree(path)
    except FileNotFoundError:
        pass


def sweep_periodically(sweep: Callable[[], object], every_s: float) -> threading.Event:
    """Run `sweep()` every `every_s` seconds in a daemon thread, for sessions whose end was never signalled (a closed
    laptop, a dropped connection, a script that never opened the page). Set the returned event to stop."""
    if every_s <= 0:
        raise ValueError(f"every_s must be > 0 seconds, got {every_s!r}")
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(every_s):
            try:
                sweep()
            except Exception:  # a sweep that failed once must not stop the next ones
                logger.exception("session sweep failed")

    threading.Thread(target=loop, name="mbm-session-sweep", daemon=True).start()
    return stop


def _newest_mtime(folder: Path) -> float:
    """The newest mtime of the folder, the entries in it and the entries one level below."""
    newest = folder.lstat().st_mtime
    with os.scandir(folder) as entries:
        for entry in entries:
            newest = max(newest, entry.stat(follow_symlinks=False).st_mtime)
            if entry.is_dir(follow_symlinks=False):
                with os.scandir(entry.path) as below:
                    newest = max([newest, *(e.stat(follow_symlinks=False).st_mtime for e in below)])
    return newest


OWNER = ".owner"  # in a process's space: the lock it holds while it lives, and its pid
GONE = "Your uploaded gallery is gone (the session expired). Upload the images again."


class SessionGone(InputError):
    """The visitor's session folder is gone: swept after it lay untouched, or removed with its process's space."""

    def __init__(self) -> None:
        super().__init__(GONE)


class Session:
    """One visitor's own gallery: their folder (`home`), the images they uploaded (`images`) and its store, what
    they may add (`quota`, `limits`), when they last used it, and its end.

    Args:
        home: the session's folder (from `SessionSpace.folder`); created by the first upload.
        engine: the engine whose model indexes and searches the uploads.
    """

    def __init__(self, home: Path, engine: Engine, quota: Quota | None = None, limits: UploadLimits | None = None):
        self.home, self.engine = Path(home), engine
        self.quota, self.limits = quota or Quota(), limits or UploadLimits()
        self.images, self.store = self.home / "images", self.home / "store"

    def __repr__(self) -> str:
        return f"Session({self.home.name})"

    def add(self, uploads: list[str], progress=None) -> tuple[Gallery, Intake, SyncReport]:
        """Take the images among uploaded files and zips (within the quota) and index them.

        Raises:
            InputError: none of the files could be used and the session has no images yet.
        """
        used_bytes, used_files = SessionSpace.usage(self.images)
        quota = replace(self.quota, used_bytes=used_bytes, used_files=used_files)
        intake = take_uploads(uploads, self.images, self.limits, quota)
        if not intake.added and not self.images.is_dir():
            why = "; ".join(f"{name}: {reason}" for name, reason in intake.skipped[:3]) or "no image files in them"
            raise InputError(f"None of those files could be used ({why}). Upload JPEG, PNG or WebP images, MP4, WebM, "
                             "MOV or MKV videos, or a .zip of them.")
        gallery, report = self.engine.open_gallery(self.images, store=self.store, progress=progress, activate=False)
        return gallery, intake, report

    def gallery(self, progress=None) -> Gallery:
        """The session's gallery, its use counted as a touch (the sweep goes by age). Raises `SessionGone`."""
        self.touch()
        if not self.images.is_dir():
            self.engine.close_gallery(self.images)
            raise SessionGone()
        try:
            return self.engine.gallery_at(self.images, self.store, progress=progress)
        except NotADirectoryError:  # swept while we looked
            raise SessionGone() from None

    def touch(self) -> None:
        with contextlib.suppress(OSError):
            os.utime(self.home)

    def close(self) -> None:
        """The visitor left: their gallery is closed and their folder removed."""
        self.engine.close_gallery(self.images)
        remove_folder(self.home)


class SessionSpace:
    """This process's share of `root/sessions`: a folder `root/sessions/<pid>-<random>/` holding one folder per
    visitor session, locked (`OWNER`) for as long as the process lives.

    Args:
        root: the cache folder that holds every process's sessions.
        secret: the key that makes session folder names unguessable (default: new random bytes).
    """

    def __init__(self, root: str | os.PathLike, secret: bytes | None = None):
        self.base = Path(root) / "sessions"
        self.secret = secret or secrets.token_bytes(32)
        self.home = self.base / f"{os.getpid()}-{secrets.token_hex(4)}"
        self.home.mkdir(parents=True)
        self._owner = _hold(self.home / OWNER)
        self._hashes: dict[Path, str] = {}  # folder -> session id, for `sweep`'s question "is its page open?"

    def session(self, session_hash: str, engine: Engine, quota: Quota | None = None,
                limits: UploadLimits | None = None) -> Session:
        """The `Session` of one visitor (its folder is created by the first upload)."""
        return Session(self.folder(session_hash), engine, quota, limits)

    def folder(self, session_hash: str) -> Path:
        """The folder of one visitor's session (not created)."""
        folder = self.home / session_folder(self.home, session_hash, self.secret).name
        self._hashes[folder] = session_hash
        return folder

    def sweep(self, idle_s: float, max_age_s: float, is_open: Callable[[str], bool] = lambda _: False,
              before_remove: Callable[[Path], None] | None = None) -> int:
        """Remove this process's session folders untouched for `idle_s` seconds whose page is not open (a script
        that never opened one, a closed laptop), and any untouched for `max_age_s`. Returns how many went."""
        def stale(folder: Path, age: float) -> bool:
            return age > max_age_s or (age > idle_s and not is_open(self._hashes.get(folder, "")))
        removed = _sweep(self.home, stale, before_remove)
        for folder in [f for f in self._hashes if not f.exists()]:
            self._hashes.pop(folder, None)
        return removed

    def sweep_orphans(self, before_remove: Callable[[Path], None] | None = None) -> int:
        """Remove the session folders of processes that are gone: their spaces, whose lock nobody holds, and
        folders of the older flat layout (no owner) untouched for a day. Returns how many session folders went."""
        removed = 0
        for space in self.base.iterdir():
            try:
                if space == self.home or space.is_symlink() or not space.is_dir():
                    continue
                if (space / OWNER).exists():
                    if _held(space / OWNER):
                        continue
                    removed += sum(1 for f in space.iterdir() if f.is_dir())
                    if before_remove is not None:
                        for f in space.iterdir():
                            before_remove(f)
                    remove_folder(space)
                elif _newest_mtime(space) < time.time() - 86400:
                    removed += _sweep_one(space, before_remove)
            except FileNotFoundError:
                continue
            except OSError as exc:
                logger.warning("could not sweep session folder %s: %s", space, exc)
        return removed

    @staticmethod
    def usage(folder: str | os.PathLike) -> tuple[int, int]:
        """`(bytes, files)` under a folder (a session's uploaded images): what its quota counts."""
        total = files = 0
        for dirpath, _, names in os.walk(folder):
            for name in names:
                with contextlib.suppress(OSError):
                    total += os.lstat(os.path.join(dirpath, name)).st_size
                    files += 1
        return total, files

    def close(self) -> None:
        """Remove every folder of this space and let go of it (at the process's end)."""
        self._owner.close()
        shutil.rmtree(self.home, ignore_errors=True)


def _hold(path: Path):
    """Open `path`, write our pid and hold an exclusive lock on it (where the system has `fcntl`)."""
    f = open(path, "w")
    f.write(str(os.getpid()))
    f.flush()
    if fcntl is not None:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return f


def _held(path: Path) -> bool:
    """Whether a living process holds the lock `_hold` took (without `fcntl`: whether its pid still runs)."""
    if fcntl is None:
        try:
            os.kill(int(path.read_text() or 0), 0)
            return True
        except (ValueError, OSError):
            return False
    with open(path) as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
        return False


def _sweep(base: Path, stale: Callable[[Path, float], bool], before_remove: Callable[[Path], None] | None) -> int:
    """Remove the folders in `base` for which `stale(folder, seconds since last touched)` holds."""
    if not base.is_dir():
        return 0
    removed, now = 0, time.time()
    for folder in base.iterdir():
        try:
            if not folder.is_symlink() and folder.is_dir() and stale(folder, now - _newest_mtime(folder)):
                removed += _sweep_one(folder, before_remove)
        except FileNotFoundError:  # removed by its own session while we looked
            continue
        except OSError as exc:
            logger.warning("could not sweep session folder %s: %s", folder, exc)
    logger.log(logging.INFO if removed else logging.DEBUG, "swept %d expired session folders from %s", removed, base)
    return removed


def _sweep_one(folder: Path, before_remove: Callable[[Path], None] | None) -> int:
    if before_remove is not None:
        before_remove(folder)
    remove_folder(folder)
    return 1
