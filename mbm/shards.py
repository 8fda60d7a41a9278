"""Shards: what `python -m mbm embed` writes and `python -m mbm index --from-shards` reads into a gallery.

A source (a folder, a text file of paths, or a parquet/CSV table with a `path` column) becomes a sorted list of
`Entry`s (path relative to the source's root, size, mtime_ns), cut into chunks where a path's hash says so
(content-defined boundaries), so a file added to a folder changes one chunk, not every chunk after it. A chunk's
shard is named by the SHA-256 of the root, the model key and its entries: a retried or duplicated task writes
the same name, atomically (a temp file, then `os.replace`), and a re-run finds it done. A shard is one parquet
file: per image its path, size, mtime_ns, sha256, width, height, caption, error, and its image and caption
embeddings as fixed-size float32 lists. `manifest.json` lists a finished run's shards; it is written last, so a
run that died leaves the previous manifest (or none), and the shards it wrote are skipped by the next run.

`import_shards` puts a manifest's rows and vectors into a `Gallery`'s SQLite store, one transaction per shard,
exactly as its sync would have (same paths, sizes, mtimes, captions), so the gallery's next sync finds them
unchanged and a later folder change is picked up as usual.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from mbm.data.images import IMAGE_SUFFIXES
from mbm.errors import InputError
from mbm.index import atomic_write

log = logging.getLogger(__name__)
MANIFEST = "manifest.json"
SHARD_SIZE = 1000  # images per shard on average; a chunk is cut at most at 4x this
COLUMNS = ("path", "size", "mtime_ns", "sha256", "width", "height", "caption", "error")
INSTALL = 'pip install "dask[distributed]" pyarrow'


@dataclass(frozen=True)
class Entry:
    path: str  # relative to the root, '/' separated
    size: int  # bytes
    mtime_ns: int


@dataclass(frozen=True)
class Chunk:
    name: str  # the shard's file name: a hash of the root, the model key and the entries
    entries: tuple[Entry, ...]


@dataclass
class Manifest:
    root: str  # the folder the paths are relative to, as the workers and the gallery see it
    model: str  # the spec the workers loaded
    key: str  # Encoder.key: the spec and a fingerprint of its weights
    dim: int  # embedding width
    items: int  # images in all shards (unreadable ones included, with their error)
    shards: list[str]  # file names, in path order

    def write(self, folder: Path) -> None:
        atomic_write(folder / MANIFEST, lambda tmp: tmp.write_text(json.dumps(asdict(self), indent=1)))

    @classmethod
    def read(cls, folder: str | os.PathLike) -> Manifest:
        path = Path(folder).expanduser() / MANIFEST
        if not path.is_file():
            raise FileNotFoundError(f"no {MANIFEST} in {path.parent}: run `python -m mbm embed SOURCE --out "
                                    f"{path.parent}` to the end first")
        try:
            return cls(**json.loads(path.read_text()))
        except (ValueError, TypeError) as e:
            raise InputError(f"{path} is not a manifest written by `python -m mbm embed` ({e})") from e


def need_pyarrow():
    """pyarrow.parquet, or an ImportError saying what to install."""
    try:
        import pyarrow.parquet as pq
    except ImportError as e:
        raise ImportError(f"shards are parquet files: {INSTALL}") from e
    return pq


# ---------------------------------------------------------------- the source and the plan
def read_source(source: str | os.PathLike) -> tuple[Path, list[Entry], list[str]]:
    """The root, the image entries under it (sorted by path) and the listed paths that could not be found.

    Args:
        source: a folder (walked as a gallery's sync walks it: hidden names skipped, symlinked folders not
            followed), a .parquet or .csv table with a `path` column, or a text file with one path a line.
            Relative paths in a list or table are relative to the file's folder.
    """
    src = Path(source).expanduser().resolve()
    if src.is_dir():
        return (src, *_stat(src, _walk(src)))
    if not src.is_file():
        raise FileNotFoundError(f"no folder or file list at {src}")
    paths = [Path(p).expanduser() for p in _listed(src)]
    paths = [(p if p.is_absolute() else src.parent / p).resolve() for p in paths]
    if not paths:
        raise InputError(f"{src} lists no paths")
    root = Path(os.path.commonpath([p.parent for p in paths]))
    entries, missing = _stat(root, [p.relative_to(root).as_posix() for p in paths])
    return root, entries, missing


def _walk(root: Path) -> list[str]:
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found += [Path(folder, f).relative_to(root).as_posix() for f in files
                  if not f.startswith(".") and Path(f).suffix.lower() in IMAGE_SUFFIXES]
    return found


def _listed(src: Path) -> list[str]:
    if src.suffix.lower() in (".parquet", ".csv"):
        pq = need_pyarrow()
        import pyarrow as pa
        import pyarrow.csv
        try:
            table = pq.read_table(src, columns=["path"]) if src.suffix.lower() == ".parquet" else \
                pyarrow.csv.read_csv(src)
            return [p for p in table.column("path").to_pylist() if p]
        except (KeyError, pa.ArrowException) as e:
            raise InputError(f"{src} needs a 'path' column of image paths ({e})") from e
    return [line.strip() for line in src.read_text().splitlines() if line.strip()]


def _stat(root: Path, paths: list[str]) -> tuple[list[Entry], list[str]]:
    entries, missing = [], []
    for rel in sorted(set(paths)):
        try:
            st = (root / rel).stat()
        except OSError as e:
            log.warning("skipping %s: %s", rel, e)
            missing.append(rel)
            continue
        entries.append(Entry(rel, st.st_size, st.st_mtime_ns))
    return entries, missing


def plan(root: Path, entries: list[Entry], key: str, shard_size: int = SHARD_SIZE) -> list[Chunk]:
    """`entries` cut into chunks after each path whose hash is 0 modulo `shard_size` (at most 4x `shard_size`
    each), every chunk named by its content."""
    if shard_size <= 0:
        raise InputError(f"the shard size must be a positive number of images, got {shard_size}")
    chunks, current = [], []
    for entry in sorted(entries, key=lambda e: e.path):
        current.append(entry)
        digest = hashlib.sha1(entry.path.encode()).digest()
        if int.from_bytes(digest[:8], "big") % shard_size == 0 or len(current) >= 4 * shard_size:
            chunks.append(current)
            current = []
    chunks += [current] if current else []
    return [Chunk(_name(root, key, c), tuple(c)) for c in chunks]


def _name(root: Path, key: str, entries: list[Entry]) -> str:
    h = hashlib.sha256(f"{root}\n{key}\n".encode())
    for e in entries:
        h.update(f"{e.path}\t{e.size}\t{e.mtime_ns}\n".encode())
    return f"{h.hexdigest()[:32]}.parquet"


# ---------------------------------------------------------------- one shard on disk
def write_shard(path: Path, rows: list[dict], images: np.ndarray, captions: np.ndarray) -> None:
    """Write one shard atomically: `rows` hold the `COLUMNS`; `images` and `captions` are `(n, D)` float32
    (zeros for a row with an error)."""
    import pyarrow as pa
    pq = need_pyarrow()
    assert images.shape == captions.shape and len(images) == len(rows)
    table = pa.table({**{c: [r.get(c) for r in rows] for c in COLUMNS},
                      "image": _fixed_lists(images), "caption_vector": _fixed_lists(captions)})
    atomic_write(path, lambda tmp: pq.write_table(table, tmp))


def _fixed_lists(x: np.ndarray):
    import pyarrow as pa
    x = np.ascontiguousarray(x, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), x.shape[1])


def read_shard(path: Path) -> tuple[list[dict], np.ndarray, np.ndarray]:
    """`(rows, images (n, D), captions (n, D))` of a shard written by `write_shard`."""
    table = need_pyarrow().read_table(path)
    rows = table.select(list(COLUMNS)).to_pylist()
    return rows, _matrix(table.column("image")), _matrix(table.column("caption_vector"))


def _matrix(column) -> np.ndarray:
    lists = column.combine_chunks()
    flat = lists.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    return flat.reshape(len(lists), lists.type.list_size)


def iter_shards(folder: Path, manifest: Manifest) -> Iterator[tuple[list[dict], np.ndarray, np.ndarray]]:
    for name in manifest.shards:
        path = folder / name
        if not path.is_file():
            raise FileNotFoundError(f"{path} is listed in {folder / MANIFEST} but missing; run the embed again")
        yield read_shard(path)


# ---------------------------------------------------------------- into a gallery
def import_shards(gallery, folder: str | os.PathLike, progress: Callable[[int, int, str], None] | None = None) -> int:
    """Put the rows and vectors of the shards listed in `folder`'s manifest into `gallery`'s store.

    One transaction per shard; a path already in the store is updated (its other models' vectors dropped when
    its bytes changed), so importing twice leaves one row per path. Returns the number of rows imported.

    Raises:
        InputError: the shards were embedded by other weights or for another root than the gallery's.
    """
    folder = Path(folder).expanduser().resolve()
    manifest = Manifest.read(folder)
    if manifest.key != gallery.encoder.key:
        raise InputError(f"the shards in {folder} hold embeddings of {manifest.key}, not of {gallery.encoder.key}; "
                         f"pass --model {manifest.model} (the same weights) or embed again with this model")
    if Path(manifest.root) != gallery.root:
        raise InputError(f"the shards are for the folder {manifest.root}, not {gallery.root}")
    done = 0
    for rows, images, captions in iter_shards(folder, manifest):
        with gallery.db.transaction() as db:
            for row, image, caption in zip(rows, images, captions):
                _upsert(db, gallery.encoder.key, row, image, caption)
            gallery.db.bump(db)
        done += len(rows)
        if progress:
            progress(done, manifest.items, "importing shards")
    log.info("imported %d rows from %d shards in %s", done, len(manifest.shards), folder)
    return done


def _upsert(db, key: str, row: dict, image: np.ndarray, caption: np.ndarray) -> None:
    old = db.execute("SELECT id, sha256 FROM items WHERE path=?", (row["path"],)).fetchone()
    if old and old[1] != row["sha256"]:
        db.execute("DELETE FROM vectors WHERE item_id=?", (old[0],))  # other bytes: no model's vector holds
    values = [row[c] for c in COLUMNS]
    item_id = db.execute(f"INSERT INTO items ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))}) "
                         "ON CONFLICT(path) DO UPDATE SET " + ", ".join(f"{c}=excluded.{c}" for c in COLUMNS[1:])
                         + " RETURNING id", values).fetchone()[0]
    if row["error"] is not None:
        db.execute("DELETE FROM vectors WHERE item_id=? AND model=?", (item_id, key))
        return
    db.executemany("INSERT OR REPLACE INTO vectors VALUES (?, ?, ?, ?)",
                   [(item_id, key, "image", image.astype(np.float32).tobytes()),
                    (item_id, key, "caption", caption.astype(np.float32).tobytes())])
