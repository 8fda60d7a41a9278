"""`Engine`: one object holding the model, the galleries and the classifiers.

The page, the CLI and the tests all go through it, so they cannot disagree. Settings come from
one `EngineConfig`, filled from CLI flags and `MBM_*` environment variables in one place
(`EngineConfig.from_env`); nothing else in the library reads the environment.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np
from PIL import Image

from mbm.classify import Timeline, ZeroShot, late_fusion, zero_shot, zero_shot_video
from mbm.config import BUILTIN_GALLERY, EngineConfig
from mbm.errors import InputError
from mbm.explore import (
    EmbeddingMap,
    IndexComparison,
    PromptLab,
    SimilarityMatrix,
    approximate_index,
    compare_indexes,
    embedding_map,
    prompt_lab,
    similarity_matrix,
)
from mbm.fusion import FusedHeads
from mbm.gallery import Gallery, Progress, SyncReport
from mbm.models import Encoder, WeightsUnavailableError, default_model
from mbm.models._registry import EMBEDDED
from mbm.search import Query, Results, Term, query_vector, rank_texts, search
from mbm.trace import PipelineTrace, pipeline_trace

log = logging.getLogger(__name__)


class Engine:
    """The model, the open galleries (one active) and the classifiers.

    Args:
        config: settings; default `EngineConfig()` (embedded model, built-in gallery).
        encoder: an already created encoder to use instead of creating `config.model`.
        progress: reports the first sync of the gallery (`progress(done, total, what)`).
    """

    def __init__(self, config: EngineConfig | None = None, encoder: Encoder | None = None,
                 progress: Progress | None = None):
        self.config = config or EngineConfig()
        self.notice = ""  # a line for people when the engine had to fall back from what it was asked
        self.encoder = encoder or self._first_model()
        self.galleries: dict[Path, Gallery] = {}
        self._galleries_lock = threading.RLock()  # the page's queue runs handlers at once; syncs run outside it
        self._gallery: Gallery | None = None
        self.last_sync: SyncReport | None = None
        self._progress = progress
        self._fused: FusedHeads | None = None  # the current model's fused classifiers, once asked for

    def _first_model(self) -> Encoder:
        """The configured model; an unnamed default that cannot load (say, a Space gone offline) falls back."""
        cfg = self.config
        if cfg.model is not None:
            return cfg.create_model(cfg.model)
        spec = default_model(cfg.on_space)
        try:
            encoder = cfg.create_model(spec)
        except WeightsUnavailableError as e:
            log.warning("falling back to %s: %s", EMBEDDED, e)
            self.notice = f"{spec} could not be loaded here, so the embedded {EMBEDDED} model is serving."
            spec, encoder = EMBEDDED, cfg.create_model(EMBEDDED)
        cfg.model = spec
        return encoder

    def __repr__(self) -> str:
        return f"Engine(model={self.encoder.name!r}, gallery={str(self.gallery.root)!r}, items={len(self.gallery)})"

    # ---------------------------------------------------------------- galleries
    @property
    def gallery(self) -> Gallery:
        """The active gallery; the configured one (or the built-in) is opened and synced on first use."""
        if self._gallery is None:
            self._gallery, self.last_sync = self.open_gallery(self.config.gallery or BUILTIN_GALLERY,
                                                              progress=self._progress)
        return self._gallery

    def _or_active(self, gallery: Gallery | None) -> Gallery:
        """`gallery`, or the active one when None. Not `gallery or self.gallery`: that asks SQLite for the
        gallery's length (a COUNT over every vector: 25 ms a query at 100k items) and would swap an empty
        gallery for the active one."""
        return self.gallery if gallery is None else gallery

    def store_for(self, root: str | Path) -> Path:
        """Where a gallery's store lives: under the cache, so image folders (and assets/) stay untouched."""
        return self.config.store_for(root)

    def open_gallery(self, root: str | Path, store: str | Path | None = None, progress: Progress | None = None,
                     activate: bool = True) -> tuple[Gallery, SyncReport]:
        """Open (or create) the gallery of a folder, sync it with the current model, and make it active.

        Raises:
            NotADirectoryError: `root` is missing or not a folder.
        """
        root = Path(root).expanduser().resolve()
        with self._galleries_lock:
            gallery = self.galleries.get(root)
            if gallery is None or gallery.encoder is not self.encoder:
                stale = gallery
                gallery = Gallery(root, self.encoder, store or self.store_for(root), factory=self.config.index_factory)
                self.galleries[root] = gallery
                if stale is not None and stale is not self._gallery:  # opened for an earlier model
                    stale.close()
        report = gallery.sync(progress=progress)
        if activate:
            self._gallery = gallery
        return gallery, report

    def close_gallery(self, root: str | Path) -> None:
        """Forget a gallery (e.g. a visitor's, when the session ends); its files are the caller's business."""
        with self._galleries_lock:
            gallery = self.galleries.pop(Path(root).expanduser().resolve(), None)
        if gallery is not None:
            gallery.close()

    def use_model(self, spec: str, progress: Progress | None = None) -> None:
        """Switch models; open galleries are re-synced (embeddings of every model stay in their stores).

        The current model stays if the new one cannot be created (the error propagates)."""
        encoder = self.config.create_model(spec)
        active = self._gallery
        self.encoder, self.config.model, self.notice = encoder, spec, ""
        with self._galleries_lock:
            roots = list(self.galleries)
        for root in roots:  # reopened (and synced for the new model) when next used
            if active is None or root != active.root:
                self.close_gallery(root)
        if active is not None:
            with self._galleries_lock:
                self.galleries.pop(active.root, None)
            self._gallery, self.last_sync = self.open_gallery(active.root, store=active.store, progress=progress)
            active.close()

    def gallery_at(self, root: str | Path, store: str | Path | None = None,
                   progress: Progress | None = None) -> Gallery:
        """The open gallery of a folder for the current model, opened (and synced) only if it is not yet."""
        with self._galleries_lock:
            gallery = self.galleries.get(Path(root).expanduser().resolve())
        if gallery is not None and gallery.encoder is self.encoder:
            return gallery
        return self.open_gallery(root, store=store, progress=progress, activate=False)[0]

    # ---------------------------------------------------------------- search
    def beyond(self, *texts: str) -> str | None:
        """A sentence for people when `texts` hold words the serving model never read in training (its answers
        for them are guesses): which words, and what the model does know. None when every word was read, or the
        model ships no scope (a pretrained one)."""
        words = list(dict.fromkeys(w for t in texts if t for w in self.encoder.unseen_words(t)))
        scope = self.encoder.scope
        return scope.note(self.encoder.name, words) if words and scope else None

    def embed_image(self, image: Image.Image) -> np.ndarray:
        """`(D,)` unit embedding of an image, to hand to several calls (search, describe) that would each embed it."""
        return self.encoder.encode_images([image])[0]

    def search(self, text: str | Query | None = None, image: Image.Image | str | Path | np.ndarray | None = None,
               image_weight: float = 1.0, k: int = 10, threshold: float | None = None,
               gallery: Gallery | None = None) -> Results:
        """text->image and image->image (or both, weighted), best first, in `gallery` (default: the active one);
        the results' `scores` are the query's cosine to every image, for a histogram. `text` may be a parsed
        `Query`."""
        query = Query.parse(text, image, image_weight)  # bad input fails before the gallery is opened
        gallery = self._or_active(gallery)
        return search(gallery, query_vector(self.encoder, list(query.terms), gallery), k=k, threshold=threshold)

    def more_like(self, item_id: int, k: int = 10, threshold: float | None = None,
                  gallery: Gallery | None = None) -> Results:
        """The images closest to a gallery item, the item itself left out."""
        return search(self._or_active(gallery), [Term(1.0, "item", int(item_id))], k=k, threshold=threshold,
                      exclude=(int(item_id),))

    def describe(self, image: Image.Image | str | Path | np.ndarray, texts: list[str] | None = None, k: int = 10,
                 gallery: Gallery | None = None) -> list[tuple[str, float]]:
        """image->text: the given texts, or else the gallery's captions, ranked for an image."""
        bank = None if texts is not None else self._or_active(gallery)
        return rank_texts(self.encoder, image, texts=texts, gallery=bank, k=k)

    # ---------------------------------------------------------------- classifiers
    def zero_shot(self, image: Image.Image | np.ndarray, labels: list[str],
                  templates: list[str] | None = None) -> ZeroShot:
        """Zero-shot classification of one image among labels (see `mbm.classify.zero_shot`)."""
        return zero_shot(self.encoder, image, labels, templates)

    def zero_shot_video(self, path: str | Path, labels: list[str], templates: list[str] | None = None,
                        every: float = 1.0, limits=None) -> Timeline:
        """Zero-shot over time: each label's probability at a video's frames (see `mbm.classify.zero_shot_video`)."""
        return zero_shot_video(self.encoder, path, labels, templates, every=every, limits=limits)

    def late_fusion(self, image: Image.Image, labels: list[str] | None = None, k: int = 10, alpha: float = 0.5,
                    templates: list[str] | None = None, gallery: Gallery | None = None) -> dict[str, dict[str, float]]:
        """Zero-shot blended with a vote of the k nearest labelled gallery images (see `mbm.classify.late_fusion`)."""
        return late_fusion(self.encoder, self._or_active(gallery), image, labels, k, alpha, templates)

    def fused(self) -> FusedHeads:
        """The fused classifiers of the current model (loaded once per model). InputError if none were trained."""
        if self._fused is None or self._fused.encoder is not self.encoder:
            self._fused = FusedHeads.load(self.encoder)
        return self._fused

    def classify_fused(self, image: Image.Image, question: str, strategy: str = "attention") -> dict[str, float]:
        """Answer a question about an image with one fused head: `{answer: probability}`, best first."""
        return self.fused().answers(image, question, (strategy,))[strategy]

    def fused_answers(self, image: Image.Image, question: str,
                      strategies: tuple[str, ...] | None = None) -> dict[str, dict[str, float]]:
        """`{strategy: {answer: probability}}` for the same input, so fusion can be compared with the baselines."""
        return self.fused().answers(image, question, strategies)

    # ---------------------------------------------------------------- explore (see mbm.explore)
    def embedding_map(self, text: str | Query | None = None, image: Image.Image | str | Path | np.ndarray | None = None,
                      k: int = 10, method: str = "pca", gallery: Gallery | None = None) -> EmbeddingMap:
        """The gallery's images and captions in 2-D, with the query (if any) and its top-k hits on the map."""
        gallery = self._or_active(gallery)
        if (text is None or isinstance(text, str) and not text.strip()) and image is None:  # no query: two clouds
            return embedding_map(gallery, method=method)
        vec = query_vector(self.encoder, list(Query.parse(text, image).terms), gallery)
        ids, vectors = gallery.image_matrix()  # the map draws images: the query's hits among them, not video moments
        return embedding_map(gallery, vec, ids[np.argsort(-(vectors @ vec), kind="stable")[:k]].tolist(), method=method)

    def similarity_matrix(self, n: int = 8, seed: int = 0, softmax: bool = False,
                          gallery: Gallery | None = None) -> SimilarityMatrix:
        """`n` sampled images x their captions: cosine and per-row softmax (see `mbm.explore.similarity_matrix`)."""
        return similarity_matrix(self._or_active(gallery), n=n, seed=seed, softmax=softmax)

    def compare_indexes(self, text: str | Query | None = None,
                        image: Image.Image | str | Path | np.ndarray | None = None, k: int = 10, kind: str = "ivf",
                        knob: int = 1, gallery: Gallery | None = None) -> IndexComparison:
        """One query on the exact index and on an approximate one ("ivf": knob is nprobe; "hnsw": efSearch)."""
        approximate_index(kind, 0)  # an unknown kind fails before the query is embedded
        gallery = self._or_active(gallery)
        vec = query_vector(self.encoder, list(Query.parse(text, image).terms), gallery)
        return compare_indexes(gallery, vec, k=k, kind=kind, knob=knob)

    def prompt_lab(self, image: Image.Image | np.ndarray, labels: list[str],
                   templates: list[str] | None = None) -> PromptLab:
        """Zero-shot per template and ensembled, with every prompt's tokens (see `mbm.explore.prompt_lab`)."""
        if image is None:
            raise InputError("give an image to classify")
        return prompt_lab(self.encoder, image, labels, templates)

    def pipeline_trace(self, image: Image.Image, text: str) -> PipelineTrace:
        """The live output of each stage, pre-processing to fused answer, for one image and one text."""
        try:
            fused, why = self.fused(), ""
        except InputError as e:  # no heads for this model: the trace shows every other stage and says so
            fused, why = None, str(e)
        return pipeline_trace(self.encoder, image, text, fused, why)
