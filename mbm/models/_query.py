"""A query process without torch: the text tower's ONNX graph, open_clip's tokenizer re-read without torch
(`mbm.models._bpe`), and what a gallery needs of an encoder to answer a text query (`name`, `key`, `embed_dim`,
`encode_texts`).

When the ONNX backend opens a model's graphs (`mbm.models._onnx`), it writes `query.json` beside them: the model's
name (its spec), key, embedding width, context length, whether the text graph takes ids cut to their length, and
the weights file they were made from (path, size, mtime). `find_query_encoder(spec, cache_dir)` finds that file for
a spec whose weights file is unchanged and returns a `QueryEncoder` over `text.onnx`; None when there is none, or
the model's tokenizer is not open_clip's byte-level BPE (the caller then loads the full model, which writes it).
`python -m mbm search` with `MBM_BACKEND=onnx` answers this way (`mbm._cli_query`).
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
QUERY_THREADS = 1  # a one-off query is one text: one thread answers it as fast, and beside other work faster


def weights_identity(path: str | os.PathLike) -> dict:
    """What tells a weights file apart from a changed one without reading it: resolved path, size, mtime."""
    p = Path(path).expanduser().resolve()
    st = p.stat()
    return {"path": str(p), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def write_manifest(folder: Path, encoder, weights: Path | None, short_text: bool) -> None:
    """`query.json` for `encoder`'s graphs in `folder` (atomically), when a torch-free process can use them: the
    weights file is known and the tokenizer is open_clip's plain byte-level BPE. Otherwise a stale one goes.
    `short_text`: the text graph takes ids cut after the batch's longest text."""
    tok = encoder.tokenizer
    plain_bpe = type(tok).__name__ == "SimpleTokenizer" and getattr(tok, "reduction_fn", None) is None \
        and getattr(getattr(tok, "clean_fn", None), "__name__", "") == "_clean_lower"
    path = folder / MANIFEST
    if weights is None or not plain_bpe or not Path(weights).is_file():
        path.unlink(missing_ok=True)
        return
    data = {"name": encoder.name, "key": encoder.key, "embed_dim": encoder.embed_dim,
            "context_length": encoder.context_length, "short_text": bool(short_text),
            "tokenizer": "clip-bpe", "weights": weights_identity(weights)}
    if path.is_file() and _read(path) == data:
        return
    tmp = folder / f".{MANIFEST}.{os.getpid()}"
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)


def _read(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else None
    except (OSError, ValueError):
        return None


def find_query_encoder(spec: str, cache_dir: str | os.PathLike) -> QueryEncoder | None:
    """The text tower of `spec` as exported under `cache_dir` (the onnx backend's folder), if its weights file is
    unchanged since; None otherwise."""
    for path in sorted(Path(cache_dir).expanduser().glob(f"*/{MANIFEST}")):
        data = _read(path)
        if not data or data.get("name") != spec or data.get("tokenizer") != "clip-bpe":
            continue
        try:
            same = weights_identity(data["weights"]["path"]) == data["weights"]
        except (OSError, KeyError, TypeError):
            same = False
        if same and (path.parent / TEXT_GRAPH).is_file():
            try:
                return QueryEncoder(path.parent, data)
            except Exception as e:  # noqa: BLE001 - onnxruntime's own errors: a file it cannot load
                log.warning("cannot use %s for queries (%s); loading the full model", path.parent, e)
                return None
    return None


class QueryEncoder:
    """The text half of an `Encoder` for queries, on ONNX Runtime and the CPU: `encode_texts` gives the same unit
    vectors as the full model's (within the ONNX backend's 1e-3 cosine)."""

    backend = "onnx"
    precision = "fp32"

    def __init__(self, folder: Path, manifest: dict, threads: int = QUERY_THREADS):
        import onnxruntime as ort

        from mbm.models._bpe import ClipBPE
        self.name, self.key = manifest["name"], manifest["key"]
        self.embed_dim, self.context_length = int(manifest["embed_dim"]), int(manifest["context_length"])
        self.short_text = bool(manifest["short_text"])
        self.tokenizer = ClipBPE(self.context_length)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(folder / TEXT_GRAPH), options, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name

    def __repr__(self) -> str:
        return f"QueryEncoder({self.name!r}, dim={self.embed_dim}, backend=onnx, text only)"

    def encode_texts(self, texts, batch_size: int = 32) -> np.ndarray:
        """Embed texts (bounded and truncated as `Encoder.encode_texts` does): `(N, D)` float32, unit rows."""
        ids = self.tokenizer([bound_for_tokenizer(t) for t in texts])  # (N, context_length)
        parts = [np.empty((0, self.embed_dim), np.float32)]
        for start in range(0, len(ids), batch_size):
            chunk = ids[start:start + batch_size]
            if self.short_text:  # up to the batch's last end token (the highest id of each row)
                chunk = chunk[:, :max(2, int(chunk.argmax(axis=1).max()) + 1)]
            out = self.session.run(None, {self.input: np.ascontiguousarray(chunk)})[0].astype(np.float32)
            parts.append(out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12))
        return np.concatenate(parts)
