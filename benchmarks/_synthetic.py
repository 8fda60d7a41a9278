"""What the benchmarks share: the machine line, starting and stopping `app.py`, synthetic unit vectors,
synthetic galleries of N items, and models with random weights (`model_spec("ViT-B-32", folder)`: the real
size, no download).

Vectors (`unit_vectors(kind, n, ...)`), two kinds:
- `isotropic`: uniform on the sphere. Every direction carries the same variance, so the intrinsic
  dimension is the full dimension: HNSW's and IVF's worst case, kept as an honest floor.
- `embedding-like`: a Gaussian with the mean and covariance of the model's real image embeddings
  (`EmbeddingStats.fit`: rendered shapes scenes through `encoder.encode_images`), each row normalised.
  It keeps what makes real embeddings easy to index (a mean direction, most variance in a few dozen
  directions) without rendering and encoding N images. Real embeddings are also clustered, which a
  single Gaussian is not; `bench_query.py --kinds real,...` compares them (`real_embeddings`) at a small
  size: at 10k items, HNSW's recall@10 at a low efSearch is higher on the real embeddings than on
  this proxy, so the proxy errs on the hard side.

A synthetic gallery (`make_gallery`) is a real `Gallery` whose SQLite store was filled directly, through
the Gallery's own schema and transaction, with N items, their image vectors and their caption vectors
under the encoder's `key`: `Gallery.index`, `Engine.search` and the page serve it like any gallery.
Without files (the default) nothing is on disk but the store: search it with `gallery=` and never
`sync()` it, since a sync would find the folder empty and delete every item. With `files=True` it also
writes one tiny JPEG per item (8x8 px, ten colours, about 300 bytes each: 100k files in seconds) and
records each file's real size, mtime and SHA-256, and as caption what `caption_from_filename` reads
from its name: exactly what `Gallery.sync()` compares (`_scan` and `_reconcile`). With every item's
image and caption vector present, a sync (e.g. `python app.py --gallery DIR` starting up) finds every
file unchanged and embedded, encodes nothing, and only builds (or loads) the FAISS index.
In both cases the thumbnails of the ten colours are cached, so result rows carry thumbnails as usual.
"""

from __future__ import annotations

import hashlib
import io
import os
import platform
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from mbm.data.images import caption_from_filename, save_thumbnail
from mbm.data.shapes import COLOURS, SHAPES
from mbm.gallery import Gallery
from mbm.models import Encoder
from mbm.sync import THUMB_SIZE

KINDS = ("isotropic", "embedding-like")


ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(args: list[str], cache: Path, log: Path, root: Path = ROOT, timeout: float = 900,
              env: dict | None = None) -> tuple[subprocess.Popen, str, float]:
    """`python root/app.py ARGS` on a free port, offline, its stores under `cache` and its output in `log`
    (rewritten), with no `MBM_*` setting of this shell leaking in (but those of `env`); waits until the page answers
    HTTP. Returns the process, the page's URL and the seconds from the launch to the answer; an app that exits or
    does not answer in `timeout` is a SystemExit with the end of its log. The tests start their apps with it too."""
    port = free_port()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("MBM_")},
           "MBM_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False", **(env or {})}
    t0 = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "app.py", "--port", str(port), *args], cwd=root, stdout=out,
                                stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}/"
    while True:
        try:
            urllib.request.urlopen(url, timeout=1)
            return proc, url, time.perf_counter() - t0
        except OSError:
            if proc.poll() is not None or time.perf_counter() - t0 > timeout:
                stop_app(proc)
                why = "exited during start-up" if proc.returncode else f"did not answer within {timeout:.0f} s"
                raise SystemExit(f"{root}/app.py {why}:\n{log.read_text(errors='replace')[-3000:]}") from None
            time.sleep(0.05)


def stop_app(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo, or what `platform` says where that file does not exist."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> str:
    """One line: CPU model, cores, and the versions and thread counts of what does the math."""
    import faiss
    import torch
    return (f"{cpu_name()}, {os.cpu_count()} cores, {platform.system()}, Python {platform.python_version()}, "
            f"torch {torch.__version__} ({torch.get_num_threads()} threads), faiss {faiss.__version__} "
            f"({faiss.omp_get_max_threads()} threads), numpy {np.__version__}")


@dataclass
class EmbeddingStats:
    """Mean and covariance (as `mean + z @ basis`, z standard normal) of a model's image embeddings."""
    mean: np.ndarray  # (D,)
    basis: np.ndarray  # (D, D): eigenvectors scaled by the square roots of their eigenvalues
    eigenvalues: np.ndarray  # (D,), largest first
    n_images: int

    @classmethod
    def fit(cls, encoder: Encoder, n_images: int = 2048, split: str = "train") -> EmbeddingStats:
        """Render `n_images` shapes scenes at the model's input size, embed them, keep mean and covariance."""
        x = real_embeddings(encoder, n_images, split, min(encoder.image_size, 224)).astype(np.float64)
        w, v = np.linalg.eigh(np.cov(x, rowvar=False))
        w, v = np.clip(w[::-1], 0, None), v[:, ::-1]
        return cls(x.mean(0).astype(np.float32), (v * np.sqrt(w)).T.astype(np.float32), w, n_images)

    @property
    def effective_dim(self) -> float:
        """The participation ratio (sum w)^2 / sum w^2: how many directions carry the variance."""
        return float(self.eigenvalues.sum() ** 2 / (self.eigenvalues ** 2).sum())

    def sample(self, n: int, seed: int = 0, chunk: int = 100_000) -> np.ndarray:
        """`(n, D)` float32 unit rows drawn from the Gaussian, generated in chunks."""
        rng = np.random.default_rng(seed)
        out = np.empty((n, len(self.mean)), np.float32)
        for start in range(0, n, chunk):
            z = rng.standard_normal((min(chunk, n - start), len(self.mean)), dtype=np.float32)
            block = self.mean + z @ self.basis
            out[start:start + len(block)] = block / np.linalg.norm(block, axis=1, keepdims=True)
        return out


def real_embeddings(encoder: Encoder, n: int, split: str = "train", size: int = 64, offset: int = 0) -> np.ndarray:
    """`(n, D)` image embeddings of rendered shapes scenes `offset .. offset + n - 1` of a split."""
    from mbm.data.shapes import make_scene, render
    parts = []
    for start in range(offset, offset + n, 512):
        images = [render(make_scene(split, i), size=size) for i in range(start, min(start + 512, offset + n))]
        parts.append(encoder.encode_images(images))
    return np.concatenate(parts) if parts else np.empty((0, encoder.embed_dim), np.float32)


def unit_vectors(kind: str, n: int, dim: int, seed: int = 0, stats: EmbeddingStats | None = None,
                 chunk: int = 100_000) -> np.ndarray:
    """`(n, dim)` float32 unit rows of a kind (see the module docstring); `embedding-like` needs `stats`."""
    if kind == "embedding-like":
        if stats is None or len(stats.mean) != dim:
            raise ValueError(f"embedding-like vectors need EmbeddingStats of dimension {dim}")
        return stats.sample(n, seed, chunk)
    if kind != "isotropic":
        raise ValueError(f"unknown kind {kind!r}; choose from {KINDS}")
    rng = np.random.default_rng(seed)
    out = np.empty((n, dim), np.float32)
    for start in range(0, n, chunk):
        block = rng.standard_normal((min(chunk, n - start), dim), dtype=np.float32)
        out[start:start + len(block)] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def model_spec(name: str, folder: str | os.PathLike) -> str:
    """`name` as a model spec; a bare open_clip architecture (e.g. "ViT-B-32") means that architecture with
    seeded random weights, saved as safetensors in `folder` and served as `ARCH:/that/file` (no download;
    the real model's size and FLOPs, meaningless embeddings)."""
    import open_clip
    if ":" in name or name not in open_clip.list_models():
        return name
    path = Path(folder) / f"{name}-random.safetensors"
    if not path.is_file():
        import torch
        from safetensors.torch import save_file
        torch.manual_seed(0)
        model = open_clip.create_model(name, pretrained=None)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return f"{name}:{path}"


def _tiny_jpegs() -> list[bytes]:
    """One 8x8 JPEG per colour of the shapes world."""
    out = []
    for rgb in COLOURS.values():
        buf = io.BytesIO()
        Image.new("RGB", (8, 8), rgb).save(buf, format="JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def item_name(i: int) -> str:
    """The file name of item `i`, e.g. "red-star-0000123.jpg" (its caption: "red star 0000123")."""
    colours = list(COLOURS)
    return f"{colours[i % len(colours)]}-{SHAPES[(i // len(colours)) % len(SHAPES)]}-{i:07d}.jpg"


def make_gallery(root: str | os.PathLike, encoder: Encoder, images: np.ndarray, captions: np.ndarray | None = None,
                 store: str | os.PathLike | None = None, files: bool = False, factory: str | None = None,
                 chunk: int = 100_000) -> Gallery:
    """A gallery of `len(images)` synthetic items whose embeddings for `encoder.key` are the given rows.

    Args:
        root: the gallery's folder (created; it should be empty).
        encoder: the model whose `key` and `embed_dim` the vectors are filed under (no image is encoded).
        images: `(N, D)` float32 unit rows, the items' image embeddings; item ids are 1..N.
        captions: `(N, D)` unit rows for the captions; default: the image rows (a caption vector must exist,
            or a sync would encode N captions).
        store: the store folder (default `root/.mbm`); for the app, `Engine.store_for(root)` under its cache.
        files: also write N tiny JPEGs so that `sync()` and the app accept the folder as is (module docstring).
        factory: passed to `Gallery`.
        chunk: rows per committed transaction.
    Returns:
        The open `Gallery`; its FAISS index is built on first use (`gallery.index`).
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    images = np.ascontiguousarray(images, np.float32)
    captions = images if captions is None else np.ascontiguousarray(captions, np.float32)
    n, dim = images.shape
    if dim != encoder.embed_dim or captions.shape != images.shape:
        raise ValueError(f"need (N, {encoder.embed_dim}) image and caption rows, got {images.shape}, {captions.shape}")
    gallery = Gallery(root, encoder, store, factory=factory)
    if len(gallery):
        raise ValueError(f"{gallery.store} already holds {len(gallery)} items for {encoder.key}; use a fresh store")
    jpegs = _tiny_jpegs()
    shas = [hashlib.sha256(b).hexdigest() for b in jpegs]
    for data, sha in zip(jpegs, shas):
        thumb = gallery._thumb_path(sha)
        if not thumb.is_file():
            save_thumbnail(Image.open(io.BytesIO(data)), thumb, THUMB_SIZE)

    for start in range(0, n, chunk):
        rows = []
        for i in range(start, min(start + chunk, n)):
            name, c = item_name(i), i % len(jpegs)
            if files:
                path = root / name
                path.write_bytes(jpegs[c])
                st = path.stat()
                size, mtime = st.st_size, st.st_mtime_ns
            else:
                size, mtime = len(jpegs[c]), 0
            rows.append((i + 1, name, size, mtime, shas[c], 8, 8, caption_from_filename(name)))
        with gallery.db.transaction() as db:  # the Gallery's own connection, lock and BEGIN IMMEDIATE
            db.executemany("INSERT INTO items (id, path, size, mtime_ns, sha256, width, height, caption, error) "
                           "VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL)", rows)
            for kind, vecs in (("image", images), ("caption", captions)):
                db.executemany("INSERT INTO vectors VALUES (?, ?, ?, ?)",
                               ((r[0], encoder.key, kind, vecs[r[0] - 1].tobytes()) for r in rows))
            if start + chunk >= n:
                gallery.db.bump(db)  # one new generation: caches (index, matrix) see a changed gallery
    return gallery
