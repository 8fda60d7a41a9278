"""Galleries: a folder of images made searchable, with SQLite as the truth and FAISS derived from it.

A gallery's store (by default `ROOT/.mbm/`) holds `gallery.sqlite`: one row per image file (path
relative to the root, size, mtime, content hash, width, height, caption, the error if it could not
be read) and, per model, the embedding of each image and of its caption. FAISS indexes under
`index/` and thumbnails under `thumbs/` are caches: delete them, or kill the process while they are
written, and they are rebuilt from SQLite.

`sync()` reconciles the table with the folder (new, changed, renamed, deleted files) and then encodes
whatever lacks an embedding for the current model, one committed batch at a time; so a sync killed at
any moment resumes where it stopped, with nothing lost and nothing twice. Originals are only read.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mbm.data.images import (
    IMAGE_SUFFIXES,
    ImageError,
    caption_from_filename,
    load_image,
    read_sidecar_caption,
    save_thumbnail,
    thumbnail,
)
from mbm.errors import StoreDamagedError
from mbm.index import Index, IndexFileError
from mbm.models import Encoder

log = logging.getLogger(__name__)
THUMB_SIZE = 256
BUSY_TIMEOUT_S = 10.0  # how long a write waits for another process's write to the same store before giving up
Progress = Callable[[int, int, str], None]  # (done, total, what) -> None

SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL UNIQUE,   -- relative to the gallery root, '/' separated
    size INTEGER NOT NULL,       -- bytes
    mtime_ns INTEGER NOT NULL,
    sha256 TEXT,                 -- of the file's bytes; NULL until first read
    width INTEGER,
    height INTEGER,
    caption TEXT NOT NULL,       -- the sidecar NAME.txt, else a readable file name
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
"""


class GalleryLockedError(RuntimeError):
    """Another process holds the gallery's database for writing (say, a second `mbm index` of the same folder)."""


@dataclass(frozen=True)
class Item:
    id: int
    path: str  # relative to the gallery root
    caption: str
    width: int | None
    height: int | None
    sha256: str | None
    error: str | None


@dataclass
class SyncReport:
    """What one `sync()` did; `skipped` pairs a relative path with the reason it could not be read."""
    added: int = 0
    changed: int = 0
    renamed: int = 0
    removed: int = 0
    unchanged: int = 0
    encoded: int = 0  # images embedded in this run
    captions_encoded: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> str:
        return (f"{self.added} added, {self.changed} changed, {self.renamed} renamed, {self.removed} removed, "
                f"{self.unchanged} unchanged; {self.encoded} images encoded, {len(self.skipped)} skipped "
                f"in {self.seconds:.1f} s")


class Gallery:
    """A folder of images and its store; all reads and writes of the store go through here.

    Args:
        root: the folder of images (scanned recursively; hidden folders and the store are skipped).
        encoder: the model whose embeddings this gallery serves.
        store: where SQLite, indexes and thumbnails live (default `root/.mbm`); use another folder
            when the image folder is read-only or shared.
        factory: a FAISS factory string to override the automatic choice (see `mbm.index`).
        busy_timeout_s: how long a write waits while another process writes to the same store, before
            `GalleryLockedError`. Reads never wait: SQLite's write-ahead log lets them go on.
    """

    def __init__(self, root: str | os.PathLike, encoder: Encoder, store: str | os.PathLike | None = None,
                 factory: str | None = None, busy_timeout_s: float = BUSY_TIMEOUT_S):
        self.root = Path(root).expanduser().resolve()
        if not self.root.is_dir():
            kind = "a file, not a folder" if self.root.exists() else "missing"
            raise NotADirectoryError(f"gallery folder {self.root} is {kind}")
        self.store = Path(store).expanduser().resolve() if store else self.root / ".mbm"
        self.store.mkdir(parents=True, exist_ok=True)
        self.encoder, self.factory = encoder, factory
        if factory:
            Index(encoder.embed_dim, factory)  # a bad factory string fails now, not after a long sync
        self._lock = threading.RLock()  # one connection, shared by the page's worker threads
        self._sync_lock = threading.Lock()
        self._db = sqlite3.connect(self.store / "gallery.sqlite", timeout=busy_timeout_s, check_same_thread=False,
                                   isolation_level=None)
        try:
            with self._locked_is_clear():  # the first statement is where a damaged file shows
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA foreign_keys=ON")
                self._db.executescript(SCHEMA)
        except BaseException:
            self._db.close()
            raise
        self._index: Index | None = None
        self._matrix: tuple[int, np.ndarray, np.ndarray] | None = None  # (generation, ids, vectors)

    def __repr__(self) -> str:
        return f"Gallery({str(self.root)!r}, model={self.encoder.name!r}, items={len(self)})"

    def __len__(self) -> int:
        """Images searchable with the current model."""
        return self._one("SELECT COUNT(*) FROM vectors WHERE model=? AND kind='image'", (self.encoder.key,))

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # ---------------------------------------------------------------- reading
    def item(self, item_id: int) -> Item:
        items = self.items([item_id])
        if not items:
            raise KeyError(f"no item {item_id} in {self.root}")
        return items[0]

    def items(self, ids: list[int] | np.ndarray) -> list[Item]:
        """Items in the order of `ids` (ids not in the gallery, and -1, are left out)."""
        ids = [int(i) for i in ids if i >= 0]
        marks = ",".join("?" * len(ids))
        rows = self._all(f"SELECT id, path, caption, width, height, sha256, error FROM items WHERE id IN ({marks})",
                         ids)
        by_id = {r[0]: Item(*r) for r in rows}
        return [by_id[i] for i in ids if i in by_id]

    def errors(self) -> list[Item]:
        """Files that could not be read, with the reason."""
        rows = self._all("SELECT id, path, caption, width, height, sha256, error FROM items "
                         "WHERE error IS NOT NULL ORDER BY path")
        return [Item(*r) for r in rows]

    def labels(self) -> dict[int, str]:
        """`{item id: label}` for images in a sub-folder, the folder name being the label (the ImageNet
        convention: `root/cat/1.jpg` is a cat); images at the root carry no label."""
        rows = self._all("SELECT id, path FROM items WHERE error IS NULL AND path LIKE '%/%'")
        return {item_id: path.split("/", 1)[0] for item_id, path in rows}

    def file(self, item: Item) -> Path:
        return self.root / item.path

    def thumbnail(self, item: Item) -> Path | None:
        """The cached thumbnail of an item (None if it has none yet)."""
        if item.sha256 is None:
            return None
        path = self._thumb_path(item.sha256)
        return path if path.is_file() else None

    def vectors(self, kind: str = "image") -> tuple[np.ndarray, np.ndarray]:
        """`(ids (N,), vectors (N, D))` of every embedded image (or caption) for the current model."""
        rows = self._all("SELECT item_id, vector FROM vectors WHERE model=? AND kind=? ORDER BY item_id",
                         (self.encoder.key, kind))
        ids = np.array([r[0] for r in rows], np.int64)
        vecs = np.frombuffer(b"".join(r[1] for r in rows), np.float32).reshape(len(rows), self.encoder.embed_dim)
        return ids, vecs

    def image_matrix(self) -> tuple[np.ndarray, np.ndarray]:
        """`vectors("image")`, cached until the gallery changes (for score histograms and maps)."""
        gen = self.generation()
        if self._matrix is None or self._matrix[0] != gen:
            self._matrix = (gen, *self.vectors("image"))
        return self._matrix[1], self._matrix[2]

    def captions(self) -> tuple[list[int], list[str], np.ndarray]:
        """Ids, captions and caption embeddings of the readable items: image->text's default text bank."""
        ids, vecs = self.vectors("caption")
        caption = dict(self._all("SELECT id, caption FROM items WHERE error IS NULL"))
        return ids.tolist(), [caption[i] for i in ids.tolist()], vecs

    def generation(self) -> int:
        """A counter bumped by every change of items or embeddings; caches compare against it."""
        value = self._one("SELECT value FROM meta WHERE key='generation'")
        return int(value or 0)

    # ---------------------------------------------------------------- the FAISS index
    def index_kind(self) -> str:
        """The FAISS index in words, e.g. "`Flat` (exact)" or "`HNSW32,Flat` (approximate)"."""
        index = self.index
        return f"`{index.factory}` ({'exact' if index.exact else 'approximate'})"

    @property
    def index(self) -> Index:
        """The FAISS index of the current model's image embeddings, loaded or rebuilt when stale."""
        with self._lock:
            gen = self.generation()
            path = self._index_path(gen)
            if self._index is not None and getattr(self._index, "generation", None) == gen:
                return self._index
            index = self._load_index(path)
            if index is None:
                index = self._build_index(path)
            index.generation = gen
            self._index = index
            return index

    def _load_index(self, path: Path) -> Index | None:
        if not path.is_file():
            return None
        try:
            index = Index.load(path)
        except IndexFileError as e:
            log.warning("rebuilding the index: %s", e)
            return None
        if len(index) != len(self) or index.dim != self.encoder.embed_dim:
            log.warning("rebuilding the index: %s holds %d vectors, the gallery %d", path, len(index), len(self))
            return None
        return index

    def _build_index(self, path: Path) -> Index:
        ids, vecs = self.image_matrix()  # the same read later serves score histograms
        index = Index.build(vecs, ids, factory=self.factory) if len(ids) else Index(self.encoder.embed_dim)
        path.parent.mkdir(parents=True, exist_ok=True)
        index.save(path)
        stale = [*path.parent.glob(f"{self._model_slug()}-g*.faiss"), *path.parent.glob(".*.tmp")]
        for old in stale:  # earlier generations, and temp files of a save that was killed
            if old != path:
                old.unlink(missing_ok=True)
        log.info("built %r over %d images", index, len(ids))
        return index

    def _index_path(self, generation: int) -> Path:
        return self.store / "index" / f"{self._model_slug()}-g{generation}.faiss"

    def _model_slug(self) -> str:
        return hashlib.sha1(f"{self.encoder.key}|{self.factory}".encode()).hexdigest()[:12]

    # ---------------------------------------------------------------- sync
    def sync(self, progress: Progress | None = None, batch_size: int | None = None,
             workers: int | None = None) -> SyncReport:
        """Bring the store up to date with the folder, then embed what the current model lacks.

        Args:
            progress: called as `progress(done, total, what)` after each batch (tqdm, gr.Progress, ...).
            batch_size: images per encoder call and per committed transaction (default: the encoder's
                fastest, `Encoder.image_batch`).
            workers: threads decoding images (default: the CPU count, at most 8).
        Returns:
            A `SyncReport`; unreadable files are in `skipped`, recorded with their error, never fatal.
        """
        start = time.perf_counter()
        report = SyncReport()
        with self._sync_lock:  # one sync at a time; searches go on between its committed batches
            found, unreadable = self._scan()
            self._reconcile(found, unreadable, report)
            self._encode_images(report, progress, batch_size or self.encoder.image_batch,
                                workers or min(8, os.cpu_count() or 2))
            self._encode_captions(report, progress)
            report.skipped = [*unreadable.items(), *((i.path, i.error) for i in self.errors())]
            self.index  # noqa: B018 - build and save it now, not during the first query
        report.seconds = time.perf_counter() - start
        log.info("synced %s: %s", self.root, report.summary())
        return report

    def _scan(self) -> tuple[dict[str, tuple[int, int, str]], dict[str, str]]:
        """`{relative path: (size, mtime_ns, caption)}` of the image files under the root, and `{relative path: why}`
        of the files that could not be read and the sub-folders (ending in "/") that could not be listed.

        Raises:
            NotADirectoryError: the root is gone (an unplugged drive): nothing in the store is touched.
            PermissionError: the root cannot be listed.
        """
        if not self.root.is_dir():
            raise NotADirectoryError(f"gallery folder {self.root} is missing; nothing was changed")
        found, unreadable, failed = {}, {}, []
        # symlinked folders are not followed (no loops); a folder that cannot be listed is reported, not skipped quietly
        for folder, dirs, files in os.walk(self.root, onerror=failed.append):
            dirs[:] = sorted(d for d in dirs if not d.startswith(".") and Path(folder, d) != self.store)
            for name in files:
                path = Path(folder, name)
                if path.suffix.lower() not in IMAGE_SUFFIXES or name.startswith("."):
                    continue
                try:
                    st = path.stat()
                except OSError as e:  # unreadable, a symlink loop, or gone while we looked: kept as it was
                    log.warning("skipping %s: %s", path, e)
                    unreadable[path.relative_to(self.root).as_posix()] = f"cannot be read ({e.strerror or e})"
                    continue
                caption = read_sidecar_caption(path) or caption_from_filename(path)
                found[path.relative_to(self.root).as_posix()] = (st.st_size, st.st_mtime_ns, caption)
        for e in failed:
            if Path(e.filename) == self.root:
                raise PermissionError(f"cannot list the gallery folder {self.root}: {e.strerror}; nothing was changed")
            log.warning("cannot list %s: %s", e.filename, e.strerror)
            sub = Path(e.filename).relative_to(self.root).as_posix() + "/"
            unreadable[sub] = f"folder cannot be read ({e.strerror})"
        return found, unreadable

    def _reconcile(self, found: dict[str, tuple[int, int, str]], unreadable: dict[str, str],
                   report: SyncReport) -> None:
        """One transaction: rows for new files, stale embeddings dropped, renames kept, deletions applied. Files that
        could not be read, or lie in a folder that could not be listed, are kept as they were (unreadable: not gone)."""
        rows = {r[1]: r for r in self._all("SELECT id, path, size, mtime_ns, sha256, caption FROM items")}
        missing = {p: r for p, r in rows.items() if p not in found and not p.startswith(tuple(unreadable))}
        with self._transaction() as db:
            for path, (size, mtime, caption) in found.items():
                row = rows.get(path)
                if row is None:
                    self._add(db, path, size, mtime, caption, missing, report)
                else:
                    self._update(db, row, size, mtime, caption, report)
            for item_id, *_ in missing.values():
                db.execute("DELETE FROM items WHERE id=?", (item_id,))
                report.removed += 1
            if report.added or report.changed or report.renamed or report.removed:
                self._bump(db)
        if report.removed or report.changed:  # only then can a thumbnail lose its file; skip the glob otherwise
            self._drop_orphan_thumbnails()

    def _add(self, db, path, size, mtime, caption, missing, report) -> None:
        same_size = [r for r in missing.values() if r[2] == size and r[4]]
        sha = _sha256(self.root / path) if same_size else None
        moved = next((r for r in same_size if r[4] == sha), None)
        if moved is not None:  # a rename: keep the row and its embeddings
            db.execute("UPDATE items SET path=?, mtime_ns=?, caption=? WHERE id=?", (path, mtime, caption, moved[0]))
            if caption != moved[5]:
                db.execute("DELETE FROM vectors WHERE item_id=? AND kind='caption'", (moved[0],))
            del missing[moved[1]]
            report.renamed += 1
            return
        db.execute("INSERT INTO items (path, size, mtime_ns, sha256, caption) VALUES (?, ?, ?, NULL, ?)",
                   (path, size, mtime, caption))
        report.added += 1

    def _update(self, db, row, size, mtime, caption, report) -> None:
        item_id, path, old_size, old_mtime, old_sha, old_caption = row
        if caption != old_caption:
            db.execute("UPDATE items SET caption=? WHERE id=?", (caption, item_id))
            db.execute("DELETE FROM vectors WHERE item_id=? AND kind='caption'", (item_id,))
            self._bump(db)
        if (size, mtime) == (old_size, old_mtime):
            report.unchanged += 1
            return
        if size == old_size and old_sha and _sha256(self.root / path) == old_sha:
            db.execute("UPDATE items SET mtime_ns=? WHERE id=?", (mtime, item_id))  # touched, same bytes
            report.unchanged += 1
            return
        db.execute("UPDATE items SET size=?, mtime_ns=?, sha256=NULL, width=NULL, height=NULL, error=NULL "
                   "WHERE id=?", (size, mtime, item_id))
        db.execute("DELETE FROM vectors WHERE item_id=? AND kind='image'", (item_id,))  # for every model
        report.changed += 1

    def _encode_images(self, report: SyncReport, progress: Progress | None, batch_size: int, workers: int) -> None:
        todo = self._all("SELECT id, path FROM items WHERE error IS NULL AND id NOT IN "
                         "(SELECT item_id FROM vectors WHERE model=? AND kind='image') ORDER BY id",
                         (self.encoder.key,))
        draft = max(THUMB_SIZE, self.encoder.image_size)
        decode = lambda row: self._decode(row, draft)
        done = 0
        with ThreadPoolExecutor(workers, thread_name_prefix="mbm-decode") as pool:
            if self.encoder.device.type == "cpu":
                # The model and the decoders need the same cores: taking turns, each with every core, beats
                # running both at once, where torch's threads and the decoders preempt each other
                # (1.5x for mbm-shapes on 2 cores; docs/BENCHMARKS.md).
                batches = (list(pool.map(decode, rows)) for rows in _chunks(todo, batch_size))
            else:  # the model runs on its own device: decode the next batch while it encodes this one
                batches = _chunks(_prefetch(pool, decode, todo, ahead=batch_size + 2 * workers), batch_size)
            for batch in batches:
                self._store_batch(batch, report)
                done += len(batch)
                if progress:
                    progress(done, len(todo), "encoding images")

    def _decode(self, row: tuple[int, str], draft: int) -> dict:
        """In a worker thread: read, hash, decode, thumbnail and transform one file."""
        item_id, path = row
        try:
            data = (self.root / path).read_bytes()
            sha = hashlib.sha256(data).hexdigest()
            image = load_image(data, name=path, draft=draft)
            small = thumbnail(image, THUMB_SIZE)
            thumb = self._thumb_path(sha)
            if not thumb.is_file():
                save_thumbnail(small, thumb, THUMB_SIZE)
            # the model sees no more than image_size pixels: transform the thumbnail when it is big enough
            source = small if min(small.size) >= self.encoder.image_size else image
            full_size = image.info.get("full_size", image.size)  # the draft may have decoded fewer pixels
            return dict(id=item_id, sha=sha, size=full_size, pixels=self.encoder.prepare(source))
        except (ImageError, OSError) as e:
            return dict(id=item_id, error=str(e) if isinstance(e, ImageError) else f"{path}: {e.strerror or e}")

    def _store_batch(self, batch: list[dict], report: SyncReport) -> None:
        good = [d for d in batch if "error" not in d]
        vecs = self.encoder.encode_pixels(_stack([d["pixels"] for d in good]), len(good)) if good else []
        with self._transaction() as db:
            for d, v in zip(good, vecs):
                db.execute("UPDATE items SET sha256=?, width=?, height=?, error=NULL WHERE id=?",
                           (d["sha"], *d["size"], d["id"]))
                db.execute("INSERT OR REPLACE INTO vectors VALUES (?, ?, 'image', ?)",
                           (d["id"], self.encoder.key, v.astype(np.float32).tobytes()))
            for d in batch:
                if "error" in d:
                    db.execute("UPDATE items SET error=? WHERE id=?", (d["error"], d["id"]))
            self._bump(db)
        report.encoded += len(good)

    def _encode_captions(self, report: SyncReport, progress: Progress | None, batch_size: int = 256) -> None:
        todo = self._all("SELECT id, caption FROM items WHERE error IS NULL AND id NOT IN "
                         "(SELECT item_id FROM vectors WHERE model=? AND kind='caption') ORDER BY id",
                         (self.encoder.key,))
        for start in range(0, len(todo), batch_size):
            rows = todo[start:start + batch_size]
            vecs = self.encoder.encode_texts([caption for _, caption in rows])
            with self._transaction() as db:
                db.executemany("INSERT OR REPLACE INTO vectors VALUES (?, ?, 'caption', ?)",
                               [(i, self.encoder.key, v.tobytes()) for (i, _), v in zip(rows, vecs)])
                self._bump(db)
            report.captions_encoded += len(rows)
            if progress:
                progress(report.captions_encoded, len(todo), "encoding captions")

    # ---------------------------------------------------------------- plumbing
    def _thumb_path(self, sha: str) -> Path:
        return self.store / "thumbs" / sha[:2] / f"{sha}.jpg"

    def _drop_orphan_thumbnails(self) -> None:
        """Thumbnails are keyed by content, so a deleted or changed file leaves one behind; remove those."""
        folder = self.store / "thumbs"
        if not folder.is_dir():
            return
        live = {r[0] for r in self._all("SELECT sha256 FROM items WHERE sha256 IS NOT NULL")}
        for thumb in folder.glob("*/*.jpg"):
            if thumb.stem not in live:
                thumb.unlink(missing_ok=True)

    def _bump(self, db: sqlite3.Connection) -> None:
        db.execute("INSERT INTO meta VALUES ('generation', '1') "
                   "ON CONFLICT(key) DO UPDATE SET value = CAST(value AS INTEGER) + 1")

    def _transaction(self):
        return _Transaction(self._db, self._lock, self._locked_is_clear)

    @contextlib.contextmanager
    def _locked_is_clear(self):
        """SQLite's 'database is locked' (another process writing past the busy timeout) as a `GalleryLockedError`,
        and a store that is not a database, or a damaged one, as a `StoreDamagedError`."""
        try:
            yield
        except sqlite3.OperationalError as e:
            if "locked" in str(e) or "busy" in str(e):
                raise GalleryLockedError(f"the gallery's database {self.store / 'gallery.sqlite'} is locked by "
                                         "another program writing to it (another mbm indexing this folder?); try "
                                         "again when it has finished") from e
            if not _DAMAGE.search(str(e)):
                raise
            raise _damaged(self.store, e) from e
        except sqlite3.DatabaseError as e:  # "file is not a database", "database disk image is malformed"
            raise _damaged(self.store, e) from e

    def _all(self, sql: str, params=()) -> list[tuple]:
        with self._lock, self._locked_is_clear():
            return self._db.execute(sql, tuple(params)).fetchall()

    def _one(self, sql: str, params=()):
        rows = self._all(sql, params)
        return rows[0][0] if rows else None


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


def _sha256(path: Path) -> str | None:
    """The file's SHA-256 in hex, read in 1 MiB pieces (`hashlib.file_digest` needs Python 3.11), or None."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while chunk := f.read(2**20):
                digest.update(chunk)
    except OSError:
        return None
    return digest.hexdigest()


def _prefetch(pool: ThreadPoolExecutor, fn: Callable, items: list, ahead: int) -> Iterator:
    """`map(fn, items)` on the pool, in order, with at most `ahead` results waiting: the decoders stay
    ahead of the model without holding a whole folder of decoded images in memory."""
    pending: deque = deque()
    for x in items:
        pending.append(pool.submit(fn, x))
        if len(pending) >= ahead:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def _chunks(it, n: int) -> Iterator[list]:
    batch = []
    for x in it:
        batch.append(x)
        if len(batch) == n:
            yield batch
            batch = []
    if batch:
        yield batch


def _stack(tensors):
    import torch
    return torch.stack(tensors)  # (B, 3, H, W)
