"""Per-visitor folders: where one session's uploads and their index live, and their removal.

A folder is named by an HMAC of the session id with a per-process secret, so knowing (or guessing) a
session id does not tell anyone where its files are. Folders go when the session ends, and a sweep
removes those a crashed process left behind.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

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


def sweep_sessions(root: str | os.PathLike, max_age_s: float,
                   before_remove: Callable[[Path], None] | None = None) -> int:
    """Delete the session folders under `root/sessions` untouched for longer than `max_age_s` seconds.

    Args:
        root: the folder given to `session_folder`; a missing one holds no sessions.
        max_age_s: age of the newest file in a session folder (looking two levels deep) past which it goes.
        before_remove: called with each folder about to go (e.g. to close the gallery open on it).
    Returns:
        How many session folders were removed.
    """
    if max_age_s < 0:
        raise ValueError(f"max_age_s must be >= 0 seconds, got {max_age_s!r}")
    base = Path(root) / "sessions"
    if not base.is_dir():
        return 0
    cutoff, removed = time.time() - max_age_s, 0
    for folder in base.iterdir():
        try:
            if not folder.is_symlink() and folder.is_dir() and _newest_mtime(folder) < cutoff:
                if before_remove is not None:
                    before_remove(folder)
                remove_folder(folder)
                removed += 1
        except FileNotFoundError:  # removed by its own session while we looked
            continue
        except OSError as exc:
            logger.warning("could not sweep session folder %s: %s", folder, exc)
    logger.log(logging.INFO if removed else logging.DEBUG, "swept %d expired session folders from %s", removed, base)
    return removed


def sweep_periodically(root: str | os.PathLike, max_age_s: float, every_s: float,
                       before_remove: Callable[[Path], None] | None = None) -> threading.Event:
    """Run `sweep_sessions(root, max_age_s, before_remove)` every `every_s` seconds in a daemon thread, for
    sessions whose end was never signalled (a closed laptop, a dropped connection). Set the returned event to stop.
    """
    if every_s <= 0:
        raise ValueError(f"every_s must be > 0 seconds, got {every_s!r}")
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(every_s):
            try:
                sweep_sessions(root, max_age_s, before_remove)
            except Exception:  # a sweep that failed once must not stop the next ones
                logger.exception("session sweep of %s failed", root)

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
