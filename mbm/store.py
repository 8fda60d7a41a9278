"""A gallery's SQLite store: the schema, one shared connection, transactions that land whole or not at all, and
SQLite's errors in people's words (`GalleryLockedError` when another program writes, `StoreDamagedError` for a file
that is not a database)."""

from __future__ import annotations

import contextlib
import re
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

from mbm.errors import StoreDamagedError

SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL UNIQUE,   -- relative to the gallery root, '/' separated
    size INTEGER NOT NULL,       -- bytes
    mtime_ns INTEGER NOT NULL,
    sha256 TEXT,                 -- of the file's bytes; NULL until first read
    width INTEGER,
    height INTEGER,
    caption TEXT NOT NULL,       -- the sidecar NAME.txt, else the file's description, else a readable file name
    error TEXT                   -- why the file could not be read; NULL when it is fine
);
CREATE TABLE IF NOT EXISTS vectors (
    item_id INTEGER NOT NULL REFERENCES items(id) ON DELETE CASCADE,
    model TEXT NOT NULL,         -- Encoder.key: spec plus weight fingerprint
    kind TEXT NOT NULL CHECK (kind IN ('image', 'caption')),
    vector BLOB NOT NULL,        -- float32, L2-normalised
    PRIMARY KEY (item_id, model, kind)
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
-- Videos (added by issue 20; a store written before them gains these tables when opened, its rows untouched):
-- an item that is a video has a row here, and one row in `frames` per sampled frame.
CREATE TABLE IF NOT EXISTS videos (
    item_id INTEGER PRIMARY KEY REFERENCES items(id) ON DELETE CASCADE,
    every REAL NOT NULL,         -- seconds between the clock's frames (cuts come on top)
    duration REAL,               -- seconds; NULL until first read
    frames INTEGER               -- frames sampled once the whole video was read (or up to its damage); NULL before
);
CREATE TABLE IF NOT EXISTS frames (
    id INTEGER PRIMARY KEY,
    item_id INTEGER NOT NULL REFERENCES items(id) ON DELETE CASCADE,
    t REAL NOT NULL,             -- seconds from the start
    cut INTEGER NOT NULL,        -- 1: kept because the picture jumped, 0: by the clock
    UNIQUE (item_id, t)
);
-- The description written into an image file (EXIF, IPTC, PNG text), as read when the file's size and mtime were
-- last new to the store (added by issue 19; empty in older stores, which read every header once): a later scan takes
-- it from here, sidecar or not, instead of reading the header again. Files without one have no row.
CREATE TABLE IF NOT EXISTS descriptions (
    item_id INTEGER PRIMARY KEY REFERENCES items(id) ON DELETE CASCADE,
    text TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS frame_vectors (
    frame_id INTEGER NOT NULL REFERENCES frames(id) ON DELETE CASCADE,
    model TEXT NOT NULL,         -- Encoder.key
    vector BLOB NOT NULL,        -- float32, L2-normalised
    PRIMARY KEY (frame_id, model)
);
"""


class GalleryLockedError(RuntimeError):
    """Another process holds the gallery's database for writing (say, a second `mbm index` of the same folder)."""



class Store:
    """The connection to `folder/gallery.sqlite` (created with its schema), shared by a page's worker threads.

    Args:
        folder: the store's folder.
        busy_timeout_s: how long a write waits while another process writes, before `GalleryLockedError`.
    """

    def __init__(self, folder: Path, busy_timeout_s: float):
        self.folder, self.lock = folder, threading.RLock()
        self.db = sqlite3.connect(folder / "gallery.sqlite", timeout=busy_timeout_s, check_same_thread=False,
                                  isolation_level=None)
        try:
            with self.errors_explained():  # the first statement is where a damaged file shows
                self.db.execute("PRAGMA journal_mode=WAL")
                self.db.execute("PRAGMA foreign_keys=ON")
                self.db.executescript(SCHEMA)
        except BaseException:
            self.db.close()
            raise

    def close(self) -> None:
        with self.lock:
            self.db.close()

    def all(self, sql: str, params=()) -> list[tuple]:
        with self.lock, self.errors_explained():
            return self.db.execute(sql, tuple(params)).fetchall()

    def one(self, sql: str, params=()):
        rows = self.all(sql, params)
        return rows[0][0] if rows else None

    def transaction(self) -> _Transaction:
        """`with store.transaction() as db:` BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any exception."""
        return _Transaction(self.db, self.lock, self.errors_explained)

    def bump(self, db: sqlite3.Connection) -> None:
        """Count one more change of items or embeddings (inside a transaction); caches compare against it."""
        db.execute("INSERT INTO meta VALUES ('generation', '1') "
                   "ON CONFLICT(key) DO UPDATE SET value = CAST(value AS INTEGER) + 1")

    @contextlib.contextmanager
    def errors_explained(self):
        """SQLite's 'database is locked' (another process writing past the busy timeout) as a `GalleryLockedError`,
        and a store that is not a database, or a damaged one, as a `StoreDamagedError`."""
        try:
            yield
        except sqlite3.OperationalError as e:
            if "locked" in str(e) or "busy" in str(e):
                raise GalleryLockedError(f"the gallery's database {self.folder / 'gallery.sqlite'} is locked by "
                                         "another program writing to it (another mbm indexing this folder?); try "
                                         "again when it has finished") from e
            if not _DAMAGE.search(str(e)):
                raise
            raise _damaged(self.folder, e) from e
        except sqlite3.DatabaseError as e:  # "file is not a database", "database disk image is malformed"
            raise _damaged(self.folder, e) from e


class _Transaction:
    """`BEGIN IMMEDIATE` ... `COMMIT`, or `ROLLBACK` on any exception: a batch lands whole or not at all."""

    def __init__(self, db: sqlite3.Connection, lock: threading.RLock, clear_errors: Callable):
        self.db, self.lock, self.clear_errors = db, lock, clear_errors

    def __enter__(self) -> sqlite3.Connection:
        self.lock.acquire()
        try:
            with self.clear_errors():
                self.db.execute("BEGIN IMMEDIATE")  # waits up to the busy timeout for another process's write
        except BaseException:
            self.lock.release()
            raise
        return self.db

    def __exit__(self, exc_type, exc, _tb) -> None:
        try:
            with self.clear_errors():
                self.db.execute("ROLLBACK" if exc_type else "COMMIT")
        finally:
            self.lock.release()
        if isinstance(exc, sqlite3.DatabaseError):  # damage found mid-batch: said as for any other statement
            with self.clear_errors():
                raise exc


_DAMAGE = re.compile(r"malformed|not a database|disk I/O error|corrupt", re.I)


def _damaged(store: Path, e: sqlite3.Error) -> StoreDamagedError:
    return StoreDamagedError(f"the gallery's store {store / 'gallery.sqlite'} is damaged ({e}), so nothing in it can "
                             f"be read. Delete the folder {store} and index the images again: mbm rebuilds it from "
                             "the image files, which are untouched.")
