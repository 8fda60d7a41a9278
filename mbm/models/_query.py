"""A query process without torch: the text tower as an ONNX graph or in numpy, open_clip's tokenizer re-read
without torch (`mbm.models._bpe`), and what a gallery needs of an encoder to answer a text query (`name`, `key`,
`embed_dim`, `encode_texts`).

A full process leaves a `query.json` for later query processes: the model's name (its spec), key, embedding width,
context length, whether the text tower takes ids cut to their length, and the weights file (path, size, mtime).
The ONNX backend (`mbm.models._onnx`) writes it beside its graphs, for `text.onnx`; the torch backend on the CPU
in fp32 (`write_torch_manifest`, under the cache's `query/`) writes it with the text tower's description for
`mbm.models._nptext` and the torch tower's vectors of probe texts, which a query process reproduces in numpy
before it answers with it. `find_query_encoder(spec, folder)` finds the file
for a spec whose weights file is unchanged and returns a `QueryEncoder`; None when there is none, or the model's
tokenizer is not open_clip's byte-level BPE (the caller then loads the full model, which writes it).
`python -m mbm search` answers this way (`mbm._cli_query`).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np

from mbm.text import bound_for_tokenizer

log = logging.getLogger(__name__)
MANIFEST = "query.json"
TEXT_GRAPH = "text.onnx"
IMAGE_GRAPH = "image.onnx"
QUERY_THREADS = 1  # a one-off query is one text: one thread answers it as fast, and beside other work faster


def weights_identity(path: str | os.PathLike) -> dict:
    """What tells a weights file apart from a changed one without reading it: resolved path, size, mtime."""
    p = Path(path).expanduser().resolve()
    st = p.stat()
    return {"path": str(p), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _plain_bpe(tok) -> bool:
    return type(tok).__name__ == "SimpleTokenizer" and getattr(tok, "reduction_fn", None) is None \
        and getattr(getattr(tok, "clean_fn", None), "__name__", "") == "_clean_lower"


def _manifest(encoder, weights: Path | None, short_text: bool) -> dict | None:
    if weights is None or not _plain_bpe(encoder.tokenizer) or not Path(weights).is_file():
        return None
    return {"name": encoder.name, "key": encoder.key, "embed_dim": encoder.embed_dim,
            "context_length": encoder.context_length, "short_text": bool(short_text),
            "tokenizer": "clip-bpe", "weights": weights_identity(weights)}


def _write(path: Path, data: dict | None) -> None:
    """`data` as `path` (atomically); None removes a stale one."""
    if data is None:
        path.unlink(missing_ok=True)
        return
    if path.is_file() and _read(path) == data:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{MANIFEST}.{os.getpid()}"
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)


def write_manifest(folder: Path, encoder, weights: Path | None, short_text: bool) -> None:
    """`query.json` for `encoder`'s graphs in `folder`, when a torch-free process can use them: the weights file is
    known and the tokenizer is open_clip's plain byte-level BPE. Otherwise a stale one goes.
    `short_text`: the text graph takes ids cut after the batch's longest text. The manifest also describes the
    image transform (`image`) when `pil_transform` reproduces the model's own on probe images: an index process
    can then run `image.onnx` without torch too (`IndexEncoder`)."""
    data = _manifest(encoder, weights, short_text)
    path = folder / MANIFEST
    if data is not None and (folder / IMAGE_GRAPH).is_file():
        _add_costly(data, path, "image", lambda: _image_cfg(encoder))
    _write(path, data)


def _add_costly(data: dict, path: Path, field: str, compute) -> None:
    """Set `data[field]`: the value the manifest at `path` holds when the rest of it equals `data` (the same
    weights and model), else `compute()`; left out when that is None."""
    old = _read(path) if path.is_file() else None
    same = old is not None and field in old and {k: v for k, v in old.items() if k != field} == data
    value = old[field] if same else compute()
    if value is not None:
        data[field] = value


def _image_cfg(encoder) -> dict | None:
    """open_clip's eval transform of `encoder` as `pil_transform` takes it, if that reproduces it on probe images
    (several sizes and shapes, exactly up to float rounding); None otherwise."""
    from open_clip import get_model_preprocess_cfg
    from PIL import Image
    pre = get_model_preprocess_cfg(encoder.model)
    cfg = {"size": encoder.image_size, "resize_mode": pre.get("resize_mode", "shortest"),
           "interpolation": pre.get("interpolation", "bicubic"), "mean": list(pre["mean"]), "std": list(pre["std"]),
           "batch": encoder.image_batch}
    if cfg["resize_mode"] not in ("squash", "shortest") or cfg["interpolation"] not in _RESAMPLE:
        return None
    rng = np.random.default_rng(0)
    ours = pil_transform(cfg)
    for w, h in ((640, 480), (300, 900), (cfg["size"],) * 2, (cfg["size"] + 1, cfg["size"] * 3), (17, 23)):
        img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        if not np.allclose(ours(img), encoder.prepare(img).numpy(), atol=1e-6):
            return None
    return cfg


_RESAMPLE = {"bicubic": 3, "bilinear": 2, "nearest": 0}  # PIL's Image.Resampling numbers


def pil_transform(cfg: dict):
    """open_clip's eval transform for PIL images in Pillow and numpy: resize ("squash" to the square, or the short
    side to the size then a centre crop, as torchvision does), then `(3, S, S)` float32 normalised."""
    size, resample = int(cfg["size"]), _RESAMPLE[cfg["interpolation"]]
    mean = np.asarray(cfg["mean"], np.float32).reshape(3, 1, 1)
    std = np.asarray(cfg["std"], np.float32).reshape(3, 1, 1)

    def run(img) -> np.ndarray:
        img = img.convert("RGB")
        w, h = img.size
        if cfg["resize_mode"] == "squash":
            new = (size, size)
        else:  # torchvision's Resize(int): the short side to `size`, the long one in proportion, rounded down
            new = (size, int(size * h / w)) if w <= h else (int(size * w / h), size)
        if new != (w, h):
            img = img.resize(new, resample)
        if cfg["resize_mode"] != "squash":
            left, top = int(round((new[0] - size) / 2.0)), int(round((new[1] - size) / 2.0))
            img = img.crop((left, top, left + size, top + size))
        x = np.asarray(img, np.float32).transpose(2, 0, 1) / np.float32(255)
        return (x - mean) / std
    return run


def write_torch_manifest(encoder, weights: Path | None, query_dir: Path) -> None:
    """`query.json` under `query_dir` for the torch backend's `encoder`, when numpy can run its text tower
    (`mbm.models._nptext`) from a safetensors weights file: only on the CPU in fp32 (what a numpy query matches).
    It holds the torch tower's vectors of `PROBE` texts, which the query process reproduces before it trusts numpy
    (there, where the weights are read anyway, not here at every start)."""
    from mbm.models._nptext import PROBE, describe
    path = query_dir / folder_name(encoder.key) / MANIFEST
    data = _manifest(encoder, weights, True)
    if data is None or encoder.device.type != "cpu" or encoder.precision != "fp32" \
            or Path(weights).suffix != ".safetensors":
        return _write(path, None)
    data["text_tower"] = describe(encoder.model)
    if data["text_tower"] is None:
        return _write(path, None)
    _add_costly(data, path, "probe", lambda: encoder.encode_texts(list(PROBE)).tolist())
    return _write(path, data)


def folder_name(key: str, salt: str = "") -> str:
    """A folder name for the weights `key`: a readable name plus a hash (of key and salt), safe on every file
    system."""
    import hashlib
    import re
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", key)[-60:].strip("._")
    return f"{readable}-{hashlib.sha1(f'{key}{salt}'.encode()).hexdigest()[:10]}"


def _read(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else None
    except (OSError, ValueError):
        return None


def find_query_encoder(spec: str, cache_dir: str | os.PathLike, images: bool = False) -> QueryEncoder | None:
    """The text tower of `spec` as a full process left it under `cache_dir` (the onnx backend's folder, or the
    torch backend's `query/`), if its weights file is unchanged since; None otherwise. With `images`, an
    `IndexEncoder` (both towers) where the manifest has the image graph's transform, else None."""
    for path in sorted(Path(cache_dir).expanduser().glob(f"*/{MANIFEST}")):
        data = _read(path)
        if not data or data.get("name") != spec or data.get("tokenizer") != "clip-bpe":
            continue
        try:
            same = weights_identity(data["weights"]["path"]) == data["weights"]
        except (OSError, KeyError, TypeError):
            same = False
        if images and not ("image" in data and (path.parent / IMAGE_GRAPH).is_file()):
            same = False
        if same and ("text_tower" in data or (path.parent / TEXT_GRAPH).is_file()):
            try:
                return (IndexEncoder if images else QueryEncoder)(path.parent, data)
            except Exception as e:  # noqa: BLE001 - onnxruntime's own errors: a file it cannot load
                log.warning("cannot use %s for queries (%s); loading the full model", path.parent, e)
                return None
    return None


class QueryEncoder:
    """The text half of an `Encoder` for queries, on the CPU: ONNX Runtime over `text.onnx` (within the ONNX
    backend's 1e-3 cosine of the full model), or numpy over the weights file when the manifest describes the text
    tower (within `mbm.models._nptext.TOLERANCE` of the torch backend)."""

    precision = "fp32"

    def __init__(self, folder: Path, manifest: dict, threads: int = QUERY_THREADS):
        from mbm.models._bpe import ClipBPE
        self.name, self.key = manifest["name"], manifest["key"]
        self.embed_dim, self.context_length = int(manifest["embed_dim"]), int(manifest["context_length"])
        self.short_text = bool(manifest["short_text"])
        self.tokenizer = ClipBPE(self.context_length)
        if "text_tower" not in manifest:
            self.backend, self.run = "onnx", _ort_graph(folder / TEXT_GRAPH, threads)
            return
        from mbm.models._nptext import PROBE, TOLERANCE, NumpyText
        self.backend, self.run = "torch", NumpyText(manifest["weights"]["path"], manifest["text_tower"])
        expected = np.asarray(manifest.get("probe", ()), np.float32)
        got = self.encode_texts(list(PROBE))
        if got.shape != expected.shape or float(np.abs(got - expected).max()) > TOLERANCE:
            raise ValueError("numpy does not reproduce the torch text tower")

    def __repr__(self) -> str:
        how = "onnx" if self.backend == "onnx" else "numpy"
        return f"QueryEncoder({self.name!r}, dim={self.embed_dim}, {how} text tower only)"

    def encode_texts(self, texts, batch_size: int = 32) -> np.ndarray:
        """Embed texts (bounded and truncated as `Encoder.encode_texts` does): `(N, D)` float32, unit rows."""
        ids = self.tokenizer([bound_for_tokenizer(t) for t in texts])  # (N, context_length)
        parts = [np.empty((0, self.embed_dim), np.float32)]
        for start in range(0, len(ids), batch_size):
            chunk = ids[start:start + batch_size]
            if self.short_text:  # up to the batch's last end token (the highest id of each row)
                chunk = chunk[:, :max(2, int(chunk.argmax(axis=1).max()) + 1)]
            parts.append(_unit(self.run(np.ascontiguousarray(chunk))))
        return np.concatenate(parts)


class IndexEncoder(QueryEncoder):
    """Both towers on ONNX Runtime, for an index process without torch: what `Gallery.sync` needs of an `Encoder`
    (`prepare` by `pil_transform`, `encode_pixels` over `image.onnx`, `image_size`, `image_batch`, `device`)."""

    def __init__(self, folder: Path, manifest: dict, threads: int | None = None):
        threads = threads or min(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                                 else os.cpu_count() or 1, 8)
        super().__init__(folder, manifest, threads)
        image = manifest["image"]
        self.image_size, self.image_batch = int(image["size"]), int(image["batch"])
        self.device = _CPU
        self.prepare = pil_transform(image)
        self._image = _ort_graph(folder / IMAGE_GRAPH, threads, spin=False)

    def encode_pixels(self, pixels: np.ndarray, batch_size: int | None = None) -> np.ndarray:
        """`(N, 3, S, S)` from `prepare`, stacked -> `(N, D)` float32, unit rows."""
        step = batch_size or self.image_batch
        parts = [_unit(self._image(np.ascontiguousarray(pixels[i:i + step], np.float32)))
                 for i in range(0, len(pixels), step)]
        return np.concatenate([np.empty((0, self.embed_dim), np.float32), *parts])

    def encode_images(self, images, batch_size: int | None = None) -> np.ndarray:
        return self.encode_pixels(np.stack([self.prepare(im) for im in images]), batch_size)


def ort_options(threads: int, spin: bool):
    """ONNX Runtime session options: `threads` intra-op threads, every graph optimisation, and whether those
    threads spin while they wait for work. A query's text graph spins (idle, a spinning pool answers a batch-1
    query sooner); an image graph that indexes does not: its threads would otherwise burn the CPU that decoding
    threads and other programs need (measured: docs/BENCHMARKS.md, "Threads that wait")."""
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    return options


def _ort_graph(path: Path, threads: int, spin: bool = True):
    """`run(x) -> output` over an ONNX graph on ONNX Runtime's CPU provider (`ort_options`)."""
    import onnxruntime as ort
    session = ort.InferenceSession(str(path), ort_options(threads, spin), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})[0]


def _unit(out: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1, as float32."""
    out = out.astype(np.float32)
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


class _Device:
    type = "cpu"


_CPU = _Device()
