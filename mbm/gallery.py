"""Galleries: a folder of images made searchable, with SQLite as the truth and FAISS derived from it.

A gallery's store (by default `ROOT/.mbm/`) holds `gallery.sqlite`: one row per image file (path
relative to the root, size, mtime, content hash, width, height, caption, the error if it could not
be read) and, per model, the embedding of each image and of its caption. FAISS indexes under
`index/` and thumbnails under `thumbs/` are caches: delete them, or kill the process while they are
written, and they are rebuilt from SQLite.

A video is one item too, with a row in `videos` and one in `frames` per sampled frame (its time), each frame
embedded per model; the FAISS index holds the frames beside the images, under ids from `FRAME_IDS` up, so one
search ranks both (`mbm.search` merges a video's matching frames into moments).

`sync()` reconciles the table with the folder (new, changed, renamed, deleted files) and then encodes
whatever lacks an embedding for the current model, one committed batch at a time; so a sync killed at
any moment resumes where it stopped, with nothing lost and nothing twice. Originals are only read.
The SQLite plumbing is `mbm.store`, the sync `mbm.sync`; this module reads and indexes.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mbm.index import Index, IndexFileError
from mbm.store import GalleryLockedError, Store
from mbm.sync import Progress, Syncing, SyncReport

if TYPE_CHECKING:  # imports torch: a query process may run without it (mbm.models._query)
    from mbm.models import Encoder

__all__ = ["FRAME_IDS", "Frames", "Gallery", "GalleryLockedError", "Item", "Progress", "SyncReport"]

log = logging.getLogger(__name__)
BUSY_TIMEOUT_S = 10.0  # how long a write waits for another process's write to the same store before giving up
FRAME_IDS = 1 << 40  # a video frame's id in the FAISS index is FRAME_IDS + its row id; below it, images' item ids


@dataclass(frozen=True)
class Item:
    id: int
    path: str  # relative to the gallery root
    caption: str
    width: int | None
    height: int | None
    sha256: str | None
    error: str | None
    every: float | None = None  # a video's seconds between clock frames; None for an image

    @property
    def is_video(self) -> bool:
        return self.every is not None


@dataclass(frozen=True)
class Frames:
    """Every embedded frame of the gallery's videos for the current model, ordered by video and time."""
    ids: np.ndarray  # (F,) frame row ids
    items: np.ndarray  # (F,) the video's item id
    times: np.ndarray  # (F,) seconds
    vectors: np.ndarray  # (F, D)

    def of(self, item_id: int) -> tuple[np.ndarray, np.ndarray]:
        """`(times, vectors)` of one video's frames."""
        where = self.items == item_id
        return self.times[where], self.vectors[where]


class Gallery(Syncing):
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
        self.encoder = encoder
        if factory:
            Index(encoder.embed_dim, factory)  # a bad factory string fails now, not after a long sync
        self._sync_lock = threading.Lock()
        self._captions_lock = threading.Lock()
        self._captions_complete: int | None = None  # the store generation at which every caption had its vector
        self.db = Store(self.store, busy_timeout_s)
        self.factory = factory or self.db.one("SELECT value FROM meta WHERE key=?", (self._factory_key(),))
        self._index: Index | None = None
        self._matrix: tuple[int, np.ndarray, np.ndarray] | None = None  # (generation, ids, vectors)
        self._frames: tuple[int, Frames] | None = None

    def __repr__(self) -> str:
        return f"Gallery({str(self.root)!r}, model={self.encoder.name!r}, items={len(self)})"

    def __len__(self) -> int:
        """Images and videos searchable with the current model."""
        return self.db.one("SELECT (SELECT COUNT(*) FROM vectors WHERE model=? AND kind='image') + (SELECT COUNT("
                           "DISTINCT f.item_id) FROM frames f JOIN frame_vectors v ON v.frame_id=f.id WHERE v.model=?)",
                           (self.encoder.key,) * 2)

    def close(self) -> None:
        self.db.close()

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
        rows = self.db.all(f"SELECT items.id, path, caption, width, height, sha256, error, v.every FROM items "
                           f"LEFT JOIN videos v ON v.item_id=items.id WHERE items.id IN ({marks})", ids)
        by_id = {r[0]: Item(*r) for r in rows}
        return [by_id[i] for i in ids if i in by_id]

    def errors(self) -> list[Item]:
        """Files that could not be read, with the reason."""
        rows = self.db.all("SELECT id, path, caption, width, height, sha256, error FROM items "
                         "WHERE error IS NOT NULL ORDER BY path")
        return [Item(*r) for r in rows]

    def labels(self) -> dict[int, str]:
        """`{item id: label}` for images in a sub-folder, the folder name being the label (the ImageNet
        convention: `root/cat/1.jpg` is a cat); images at the root carry no label."""
        rows = self.db.all("SELECT id, path FROM items WHERE error IS NULL AND path LIKE '%/%' "
                           "AND id NOT IN (SELECT item_id FROM videos)")
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
        rows = self.db.all("SELECT item_id, vector FROM vectors WHERE model=? AND kind=? ORDER BY item_id",
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

    def frames(self) -> Frames:
        """The embedded frames of every video for the current model, cached until the gallery changes."""
        gen = self.generation()
        if self._frames is None or self._frames[0] != gen:
            rows = self.db.all("SELECT f.id, f.item_id, f.t, v.vector FROM frames f JOIN frame_vectors v ON "
                               "v.frame_id=f.id WHERE v.model=? ORDER BY f.item_id, f.t", (self.encoder.key,))
            vecs = np.frombuffer(b"".join(r[3] for r in rows), np.float32).reshape(len(rows), self.encoder.embed_dim)
            column = lambda i, dtype: np.array([r[i] for r in rows], dtype)
            self._frames = (gen, Frames(column(0, np.int64), column(1, np.int64), column(2, np.float64), vecs))
        return self._frames[1]

    def frame_thumbnail(self, item: Item, t: float) -> Path | None:
        """The cached picture of a video's frame at `t` seconds (None if there is none)."""
        from mbm.sync_video import frame_key
        if item.sha256 is None:
            return None
        path = self._thumb_path(frame_key(item.sha256, t))
        return path if path.is_file() else None

    def captions(self) -> tuple[list[int], list[str], np.ndarray]:
        """Ids, captions and caption embeddings of the readable items: image->text's default text bank. Captions a
        sync left without a vector (those made from file names) are embedded now, once."""
        self.embed_captions()
        ids, vecs = self.vectors("caption")
        caption = dict(self.db.all("SELECT id, caption FROM items WHERE error IS NULL"))
        return ids.tolist(), [caption[i] for i in ids.tolist()], vecs

    def generation(self) -> int:
        """A counter bumped by every change of items or embeddings; caches compare against it."""
        value = self.db.one("SELECT value FROM meta WHERE key='generation'")
        return int(value or 0)

    # ---------------------------------------------------------------- the FAISS index
    def index_kind(self) -> str:
        """The FAISS index in words, e.g. "`Flat` (exact)" or "`HNSW32,Flat` (approximate)"."""
        index = self.index
        return f"`{index.factory}` ({'exact' if index.exact else 'approximate'})"

    @property
    def index(self) -> Index:
        """The FAISS index of the current model's image embeddings, loaded or rebuilt when stale."""
        with self.db.lock:
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
        expected = len(self.image_matrix()[0]) + len(self.frames().ids)
        if len(index) != expected or index.dim != self.encoder.embed_dim:
            log.warning("rebuilding the index: %s holds %d vectors, the gallery %d", path, len(index), expected)
            return None
        return index

    def _build_index(self, path: Path) -> Index:
        ids, vecs = self.image_matrix()  # the same read later serves score histograms
        frames = self.frames()
        ids, vecs = np.concatenate([ids, FRAME_IDS + frames.ids]), np.vstack([vecs, frames.vectors])
        index = Index.build(vecs, ids, factory=self.factory) if len(ids) else Index(self.encoder.embed_dim)
        path.parent.mkdir(parents=True, exist_ok=True)
        index.save(path)
        stale = [*path.parent.glob(f"{self._model_slug()}-g*.faiss"), *path.parent.glob(".*.tmp")]
        for old in stale:  # earlier generations, and temp files of a save that was killed
            if old != path:
                old.unlink(missing_ok=True)
        log.info("built %r over %d images and frames", index, len(ids))
        return index

    def record_factory(self, factory: str | None) -> None:
        """Keep `factory` as this model's index type in the store (None: back to the choice by size), so every
        later opening without a factory of its own (the page, `search`) builds and loads the same index."""
        if factory:
            Index(self.encoder.embed_dim, factory)
        with self.db.transaction() as db:
            db.execute("DELETE FROM meta WHERE key=?", (self._factory_key(),))
            if factory:
                db.execute("INSERT INTO meta VALUES (?, ?)", (self._factory_key(), factory))
        with self.db.lock:
            self.factory, self._index = factory, None

    def _factory_key(self) -> str:
        return f"index_factory {self.encoder.key}"

    def _index_path(self, generation: int) -> Path:
        return self.store / "index" / f"{self._model_slug()}-g{generation}.faiss"

    def _model_slug(self) -> str:
        return hashlib.sha1(f"{self.encoder.key}|{self.factory}".encode()).hexdigest()[:12]

