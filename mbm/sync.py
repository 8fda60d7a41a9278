"""The sync half of a `Gallery`: reconcile the store with the folder (new, changed, renamed, deleted files), then
embed what the current model lacks, one committed batch at a time, so a sync killed at any moment resumes where it
stopped. Decoding runs on every core ahead of the encoder.

A folder may ship its embeddings for a model (`mbm.shipped`): an image whose bytes and a caption whose text are in
them, for exactly these weights, takes its vector from there instead of the model. Videos (`mbm.video.is_video`)
are listed here like images and sampled, frame by frame, by `mbm.sync_video`."""

from __future__ import annotations

import hashlib
import logging
import os
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
    read_embedded_caption,
    read_sidecar_caption,
    save_thumbnail,
    thumbnail,
)
from mbm.shipped import read_shipped, write_shipped
from mbm.sync_video import EVERY, VIDEOS_TODO, VideoSyncing, stack_pixels
from mbm.video import VIDEO_SUFFIXES, is_video

log = logging.getLogger(__name__)
Progress = Callable[[int, int, str], None]  # (done, total, what) -> None
THUMB_SIZE = 256  # the side of a cached thumbnail, in pixels
_SUFFIXES = IMAGE_SUFFIXES | VIDEO_SUFFIXES


@dataclass
class SyncReport:
    """What one `sync()` did; `skipped` pairs a relative path with the reason it could not be read."""
    added: int = 0
    changed: int = 0
    renamed: int = 0
    removed: int = 0
    unchanged: int = 0
    encoded: int = 0  # images embedded in this run
    reused: int = 0  # images and frames whose vector came from the folder's shipped vectors
    videos: int = 0  # videos sampled in this run
    frames: int = 0  # their frames embedded in this run
    captions_encoded: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> str:
        return (f"{self.added} added, {self.changed} changed, {self.renamed} renamed, {self.removed} removed, "
                f"{self.unchanged} unchanged; {self.encoded} images encoded"
                f"{f', {self.frames} frames of {self.videos} videos' if self.videos else ''}"
                f"{f' ({self.reused} from shipped vectors)' if self.reused else ''}, {len(self.skipped)} skipped "
                f"in {self.seconds:.1f} s")


def decode_for_model(data: bytes, name: str, encoder) -> tuple:
    """One image file's bytes decoded as a gallery reads them: at draft scale (the model and the thumbnail need no
    more), then `(thumbnail, the image the model's transform takes, the file's full (width, height))`; the model
    sees no more than `image_size` pixels, so it takes the thumbnail when that is big enough. Raises ImageError."""
    image = load_image(data, name=name, draft=max(THUMB_SIZE, encoder.image_size))
    small = thumbnail(image, THUMB_SIZE)
    source = small if min(small.size) >= encoder.image_size else image
    return small, source, image.info.get("full_size", image.size)  # the draft may have decoded fewer pixels


def read_error(path: str, e: Exception) -> str:
    """Why a file could not be read, for its row: an ImageError says it already; an OSError gets the path."""
    return str(e) if isinstance(e, ImageError) else f"{path}: {getattr(e, 'strerror', None) or e}"


class Syncing(VideoSyncing):
    """`Gallery.sync` and what it needs; mixed into `Gallery`, whose store, folder and encoder it uses."""

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
            items = self._items()
            found, unreadable, described = self._scan(_seen(items))
            self._reconcile(found, unreadable, report, items, described)
            shipped = read_shipped(self.root, self.encoder)
            self._encode_images(report, progress, batch_size or self.encoder.image_batch,
                                workers or min(8, os.cpu_count() or 2), shipped.images)
            self._encode_videos(report, progress, shipped.frames)
            self._encode_captions(report, progress, shipped.captions)
            report.skipped = [*unreadable.items(), *((i.path, i.error) for i in self.errors())]
            self.index  # noqa: B018 - build and save it now, not during the first query
        report.seconds = time.perf_counter() - start
        log.info("synced %s: %s", self.root, report.summary())
        return report

    def up_to_date(self) -> bool:
        """True when a sync would change nothing a search reads: every file under the root is as the store recorded
        it (none new or gone; size, mtime and caption the same) and every image and video has its embeddings for the
        current model. Only reads: a process that cannot embed images (a torch-free query, `mbm._cli_query`) asks
        this before it answers from the store. Files that cannot be read now count as they were, as in `sync`."""
        rows = _seen(self._items())
        found, unreadable, _ = self._scan(rows)
        if any(rows.get(path) != seen for path, seen in found.items()):
            return False
        if any(path not in found and not path.startswith(tuple(unreadable)) for path in rows):
            return False
        return not (self.db.all(IMAGES_TODO + " LIMIT 1", (self.encoder.key,))
                    or self.db.all(VIDEOS_TODO + " LIMIT 1", (self.encoder.key,)))

    def _items(self) -> dict[str, tuple]:
        """`{relative path: (id, path, size, mtime_ns, sha256, caption)}` as the store recorded them: read once a
        sync, for its scan (`_seen`) and its reconciling."""
        return {r[1]: r for r in self.db.all("SELECT id, path, size, mtime_ns, sha256, caption FROM items")}

    def _scan(self, stored: dict[str, tuple[int, int, str]]) -> tuple[dict, dict[str, str], dict[str, str | None]]:
        """`{relative path: (size, mtime_ns, caption)}` of the image files under the root, `{relative path: why}`
        of the files that could not be read and the sub-folders (ending in "/") that could not be listed, and
        `{relative path: description or None}` of the images whose headers it read.

        A file's caption is its sidecar's text, else the description written into the file (EXIF, IPTC, PNG text),
        else its name. The header is read only for a file new to the store or changed since `stored` (`_seen`
        of what the store holds); for the others the store's `descriptions` say.

        Raises:
            NotADirectoryError: the root is gone (an unplugged drive): nothing in the store is touched.
            PermissionError: the root cannot be listed.
        """
        if not self.root.is_dir():
            raise NotADirectoryError(f"gallery folder {self.root} is missing; nothing was changed")
        found, unreadable, failed, read = {}, {}, [], {}
        if self.db.one("SELECT value FROM meta WHERE key='captions'") != CAPTION_SOURCES:
            stored = {}  # a store from before embedded descriptions were read: read every header once
        known = dict(self.db.all("SELECT i.path, d.text FROM descriptions d JOIN items i ON i.id = d.item_id"))
        # symlinked folders are not followed (no loops); a folder that cannot be listed is reported, not skipped quietly
        for path in _media_files(self.root, self.store, failed.append):
            try:
                st = path.stat()
            except OSError as e:  # unreadable, a symlink loop, or gone while we looked: kept as it was
                log.warning("skipping %s: %s", path, e)
                unreadable[path.relative_to(self.root).as_posix()] = f"cannot be read ({e.strerror or e})"
                continue
            rel = path.relative_to(self.root).as_posix()
            if stored.get(rel, ())[:2] == (st.st_size, st.st_mtime_ns):
                description = known.get(rel)
            elif path.suffix.lower() in IMAGE_SUFFIXES:
                description = read[rel] = read_embedded_caption(path)
            else:
                description = None
            caption = read_sidecar_caption(path) or description or caption_from_filename(path)
            found[rel] = (st.st_size, st.st_mtime_ns, caption)
        for e in failed:
            if Path(e.filename) == self.root:
                raise PermissionError(f"cannot list the gallery folder {self.root}: {e.strerror}; nothing was changed")
            log.warning("cannot list %s: %s", e.filename, e.strerror)
            sub = Path(e.filename).relative_to(self.root).as_posix() + "/"
            unreadable[sub] = f"folder cannot be read ({e.strerror})"
        return found, unreadable, read

    def _reconcile(self, found: dict[str, tuple[int, int, str]], unreadable: dict[str, str],
                   report: SyncReport, rows: dict[str, tuple], described: dict[str, str | None]) -> None:
        """One transaction: rows for new files, stale embeddings dropped, renames kept, deletions applied, and the
        descriptions read from headers (`described`) kept. `rows` is what `_items` read before the scan. Files that
        could not be read, or lie in a folder that could not be listed, are kept as they were (unreadable: not gone)."""
        missing = {p: r for p, r in rows.items() if p not in found and not p.startswith(tuple(unreadable))}
        with self.db.transaction() as db:
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
                self.db.bump(db)
            # what the headers read now said, for later scans
            db.executemany("DELETE FROM descriptions WHERE item_id = (SELECT id FROM items WHERE path=?)",
                           [(path,) for path in described])
            db.executemany("INSERT INTO descriptions SELECT id, ? FROM items WHERE path=?",
                           [(text, path) for path, text in described.items() if text])
            db.execute("INSERT OR REPLACE INTO meta VALUES ('captions', ?)", (CAPTION_SOURCES,))
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
        item_id = db.execute("INSERT INTO items (path, size, mtime_ns, sha256, caption) VALUES (?, ?, ?, NULL, ?)",
                             (path, size, mtime, caption)).lastrowid
        self._mark_video(db, item_id, path)
        report.added += 1

    def _update(self, db, row, size, mtime, caption, report) -> None:
        item_id, path, old_size, old_mtime, old_sha, old_caption = row
        if caption != old_caption:
            db.execute("UPDATE items SET caption=? WHERE id=?", (caption, item_id))
            db.execute("DELETE FROM vectors WHERE item_id=? AND kind='caption'", (item_id,))
            self.db.bump(db)
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
        db.execute("DELETE FROM frames WHERE item_id=?", (item_id,))  # a video's frames, and their vectors
        db.execute("DELETE FROM videos WHERE item_id=?", (item_id,))
        self._mark_video(db, item_id, path)  # a GIF may have become animated, or still
        report.changed += 1

    def _mark_video(self, db, item_id: int, path: str) -> None:
        if is_video(self.root / path):
            db.execute("INSERT INTO videos (item_id, every) VALUES (?, ?)", (item_id, EVERY))

    def write_shipped_vectors(self) -> Path:
        """Write `ROOT/.vectors/<model>.npz` from this store (see `mbm.shipped`); sync first."""
        self.embed_captions()  # every caption ships, those of file names too
        return write_shipped(self.root, self.db, self.encoder)

    def _encode_images(self, report: SyncReport, progress: Progress | None, batch_size: int, workers: int,
                       shipped: dict[str, np.ndarray]) -> None:
        todo = self.db.all(IMAGES_TODO, (self.encoder.key,))
        decode = lambda row: self._decode(row, shipped)
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

    def _decode(self, row: tuple[int, str], shipped: dict[str, np.ndarray]) -> dict:
        """In a worker thread: read, hash, decode, thumbnail and transform one file (or take its shipped vector)."""
        item_id, path = row
        try:
            data = (self.root / path).read_bytes()
            sha = hashlib.sha256(data).hexdigest()
            small, source, full_size = decode_for_model(data, path, self.encoder)
            thumb = self._thumb_path(sha)
            if not thumb.is_file():
                save_thumbnail(small, thumb, THUMB_SIZE)
            if sha in shipped:
                return dict(id=item_id, sha=sha, size=full_size, vector=shipped[sha])
            return dict(id=item_id, sha=sha, size=full_size, pixels=self.encoder.prepare(source))
        except (ImageError, OSError) as e:
            return dict(id=item_id, error=read_error(path, e))

    def _store_batch(self, batch: list[dict], report: SyncReport) -> None:
        good = [d for d in batch if "error" not in d]
        new = [d for d in good if "pixels" in d]
        vectors = self.encoder.encode_pixels(stack_pixels([d["pixels"] for d in new]), len(new)) if new else []
        for d, v in zip(new, vectors):
            d["vector"] = v
        vecs = [d["vector"] for d in good]
        with self.db.transaction() as db:
            for d, v in zip(good, vecs):
                db.execute("UPDATE items SET sha256=?, width=?, height=?, error=NULL WHERE id=?",
                           (d["sha"], *d["size"], d["id"]))
                db.execute("INSERT OR REPLACE INTO vectors VALUES (?, ?, 'image', ?)",
                           (d["id"], self.encoder.key, v.astype(np.float32).tobytes()))
            for d in batch:
                if "error" in d:
                    db.execute("UPDATE items SET error=? WHERE id=?", (d["error"], d["id"]))
            self.db.bump(db)
        report.encoded += len(good)
        report.reused += len(good) - len(new)

    def _encode_captions(self, report: SyncReport | None, progress: Progress | None, shipped: dict[str, np.ndarray],
                         every: bool = False, batch_size: int = 256) -> None:
        """Embed the captions that lack a vector for the current model: in a sync, only real text (a sidecar file)
        and what the shipped vectors hold; a caption made from a file name waits until a view asks for the captions
        (`embed_captions`), since most photo folders never need them and they cost a text pass per file."""
        with self._captions_lock:  # a sync and a view asking for the captions at once embed each caption once
            todo = [(i, c) for i, path, c in self.db.all(CAPTIONS_TODO, (self.encoder.key,))
                    if every or c in shipped or c != caption_from_filename(path)]
            done = 0
            for start in range(0, len(todo), batch_size):
                rows = todo[start:start + batch_size]
                new = [caption for _, caption in rows if caption not in shipped]
                encoded = dict(zip(new, self.encoder.encode_texts(new))) if new else {}
                vecs = [shipped[c] if c in shipped else encoded[c] for _, c in rows]
                with self.db.transaction() as db:
                    db.executemany("INSERT OR REPLACE INTO vectors VALUES (?, ?, 'caption', ?)",
                                   [(i, self.encoder.key, v.tobytes()) for (i, _), v in zip(rows, vecs)])
                    self.db.bump(db)
                done += len(rows)
                if report is not None:
                    report.captions_encoded += len(rows)
                if progress:
                    progress(done, len(todo), "encoding captions")

    def embed_captions(self, progress: Progress | None = None) -> None:
        """Embed every caption still without a vector for the current model (those a sync left: file names). Once
        that is done at a store generation, a later call at the same generation does not look again."""
        gen = self.generation()
        if self._captions_complete == gen:
            return
        self._encode_captions(None, progress, {}, every=True)
        if self.generation() == gen:  # nothing was written meanwhile (by us or another): complete at `gen`
            self._captions_complete = gen

    def _thumb_path(self, sha: str) -> Path:
        return self.store / "thumbs" / sha[:2] / f"{sha}.jpg"

    def _drop_orphan_thumbnails(self) -> None:
        """Thumbnails are keyed by content (a video's frames by its content and their time), so a deleted or changed
        file leaves some behind; remove those."""
        folder = self.store / "thumbs"
        if not folder.is_dir():
            return
        live = {r[0] for r in self.db.all("SELECT sha256 FROM items WHERE sha256 IS NOT NULL")}
        for thumb in folder.glob("*/*.jpg"):
            if thumb.stem.split("-")[0] not in live:
                thumb.unlink(missing_ok=True)


# captions of readable images that lack an embedding for a model (`?`: its key)
CAPTIONS_TODO = ("SELECT id, path, caption FROM items WHERE error IS NULL AND id NOT IN (SELECT item_id FROM vectors "
                 "WHERE model=? AND kind='caption') AND id NOT IN (SELECT item_id FROM videos) ORDER BY id")
# images that lack an embedding for a model (`?`: its key)
IMAGES_TODO = ("SELECT id, path FROM items WHERE error IS NULL AND id NOT IN (SELECT item_id FROM vectors WHERE "
               "model=? AND kind='image') AND id NOT IN (SELECT item_id FROM videos) ORDER BY id")


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


def _seen(items: dict[str, tuple]) -> dict[str, tuple[int, int, str]]:
    """`{relative path: (size, mtime_ns, caption)}` of `Syncing._items`' rows: what a scan compares a file with."""
    return {path: (r[2], r[3], r[5]) for path, r in items.items()}


def _media_files(root: Path, store: Path, onerror: Callable) -> Iterator[Path]:
    """The image and video files under `root` in a stable order: not hidden ones, not in hidden folders or the
    store, symlinked folders not followed (no loops); folders that cannot be listed go to `onerror`."""
    for folder, dirs, files in os.walk(root, onerror=onerror):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and Path(folder, d) != store)
        for name in sorted(files):
            if Path(name).suffix.lower() in _SUFFIXES and not name.startswith("."):
                yield Path(folder, name)


CAPTION_SOURCES = "sidecar,embedded,name"  # meta 'captions': the store's descriptions table is complete


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

