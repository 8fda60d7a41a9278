"""`python -m mbm search` answered without torch when it can be (issue 19).

A one-off text search reads the gallery's store and embeds a few words; loading torch, torchvision, open_clip and
both towers costs a query process 2-5 s and ~1.5 GB before the first token. With the ONNX backend
(`MBM_BACKEND=onnx`), once a full process has exported the model's graphs (their `query.json` names the weights),
`quick_search` answers from the text graph alone (`mbm.models._query`), provided the gallery needs no sync
(`Gallery.up_to_date`): every file as the store recorded it, every image embedded. Anything else (a new or changed
file, an image in the query, another backend, a model never exported) returns None, and the caller runs the full
engine, which syncs first, as before.
"""

from __future__ import annotations

import logging
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
    if config.backend != "onnx" or config.device not in ("auto", "cpu") or config.precision not in ("auto", "fp32"):
        return None
    query = Query.parse(args.query)  # bad input fails here as it would in the engine
    if any(t.kind == "image" for t in query.terms):
        return None
    encoder = find_query_encoder(config.model or default_model(config.on_space), config.cache_path() / "onnx")
    root = Path(config.gallery or BUILTIN_GALLERY).expanduser()
    if encoder is None or not root.is_dir():
        return None
    gallery = Gallery(root, encoder, config.store_for(root), factory=config.index_factory)
    try:
        if not gallery.up_to_date():
            log.info("%s needs a sync: loading the full model", root)
            return None
        return search(gallery, query_vector(encoder, list(query.terms), gallery), k=args.k, threshold=args.threshold)
    finally:
        gallery.close()
