"""`python -m mbm search` answered without torch when it can be (issue 19).

A one-off text search reads the gallery's store and embeds a few words; loading torch, torchvision, open_clip and
both towers costs a query process 2-5 s and ~1.5 GB before the first token. Once a full process has left the
model's `query.json` (`mbm.models._query`: beside the ONNX graphs with `MBM_BACKEND=onnx`; under the cache's
`query/` on the torch backend, for a numpy text tower), `quick_search` answers from the text tower alone, provided
the gallery needs no sync (`Gallery.up_to_date`): every file as the store recorded it, every image embedded.
Anything else (a new or changed file, an image in the query, a GPU or a precision a CPU answer would not match, a
model never loaded) returns None, and the caller runs the full engine, which syncs first, as before.
"""

from __future__ import annotations

import logging
import os
import platform
from pathlib import Path

from mbm.config import BUILTIN_GALLERY, EngineConfig
from mbm.gallery import Gallery
from mbm.models._query import find_query_encoder
from mbm.models._registry import default_model
from mbm.search import Query, Results, query_vector, search

log = logging.getLogger(__name__)


def quick_search(args, config: EngineConfig) -> Results | None:
    """The hits of `search`'s arguments, with the settings `config`, when a torch-free process can answer them; None
    when it cannot."""
    if args.image is not None or args.more_like is not None or not (args.query and args.query.strip()):
        return None
    if not cpu_fp32(config, gpu_matters=config.backend == "torch"):
        return None  # on a GPU the torch engine embeds in fp16, which a CPU answer would not match
    query = Query.parse(args.query)  # bad input fails here as it would in the engine
    if any(t.kind == "image" for t in query.terms):
        return None
    folder = config.cache_path() / ("onnx" if config.backend == "onnx" else "query")
    encoder = find_query_encoder(config.model or default_model(config.on_space), folder)
    gallery = _gallery(config, encoder)
    if gallery is None:
        return None
    try:
        if not gallery.up_to_date():
            log.info("%s needs a sync: loading the full model", gallery.root)
            return None
        return search(gallery, query_vector(encoder, list(query.terms), gallery), k=args.k, threshold=args.threshold)
    finally:
        gallery.close()


def quick_index(args, config: EngineConfig, progress=None):
    """`index FOLDER` without torch, with the ONNX backend on the CPU, once a full process has exported the model's
    graphs and described its image transform in `query.json` (`mbm.models._query.IndexEncoder`): the same sync,
    vectors within the backend's float rounding of the full engine's. Returns `(gallery, report)`, or None when it
    cannot (another backend, a GPU, a model never opened in full, its weights changed); the caller then runs the
    full engine."""
    if config.backend != "onnx" or not cpu_fp32(config, gpu_matters=True):
        return None  # on a GPU the full engine would run the graphs on the GPU's provider
    encoder = find_query_encoder(config.model or default_model(config.on_space), config.cache_path() / "onnx",
                                 images=True)
    gallery = _gallery(config, encoder)
    return None if gallery is None else (gallery, gallery.sync(progress))


def cpu_fp32(config: EngineConfig, gpu_matters: bool) -> bool:
    """Whether the settings ask for what a torch-free process gives: fp32 on the CPU (`auto` counts, unless
    `gpu_matters` and this machine may have a GPU that `auto` would pick)."""
    if config.device not in ("auto", "cpu") or config.precision not in ("auto", "fp32"):
        return False
    return not (gpu_matters and config.device == "auto" and may_have_gpu())


def _gallery(config: EngineConfig, encoder) -> Gallery | None:
    """The configured gallery (or the built-in one) opened with a torch-free `encoder`; None without either."""
    root = Path(config.gallery or BUILTIN_GALLERY).expanduser()
    if encoder is None or not root.is_dir():
        return None
    return Gallery(root, encoder, config.store_for(root), factory=config.index_factory)


def may_have_gpu() -> bool:
    """Whether torch's `auto` device could pick a GPU on this machine, judged without importing torch: NVIDIA's or
    AMD's device nodes, WSL's GPU, or an Apple silicon Mac."""
    nodes = ("/dev/nvidiactl", "/dev/nvidia0", "/dev/kfd", "/dev/dxg")
    return any(os.path.exists(p) for p in nodes) or (platform.system() == "Darwin" and platform.machine() == "arm64")
