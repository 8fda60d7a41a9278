"""Search: a query becomes one unit vector, FAISS ranks the gallery, ids become result rows.

A query is a weighted sum of terms: texts, images, and gallery items ("more like this"), e.g.
`2 x "red circle" + @photo.jpg - 0.5 x "blue"`. Each term is embedded to a unit vector, the weighted
sum is normalised again, and its cosine to every gallery image is the score. The same string syntax
serves the CLI and the page:

    term     := [weight ("x" | "*" | ":")] atom
    atom     := "quoted text" | 'quoted text' | @image-path | @"image path" | #item-id | bare words
    query    := ["-"] term (("+" | "-") term)*      operators stand apart, so "t-shirt" stays one word

A video's frames are ranked with the images; the frames of one video that stand out for the query merge into
moments (`mbm.video.moments`), each one hit: the video, its span, its best frame and that frame's score.

image->text runs the other way: an image's vector ranks a bank of texts (the gallery's captions, or
texts the caller gives).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from mbm.data.images import load_image
from mbm.errors import InputError
from mbm.gallery import FRAME_IDS
from mbm.text import MAX_TEXTS, check_texts, clean_text
from mbm.video import Moment, moments

if TYPE_CHECKING:  # imports torch: a query process may run without it (mbm.models._query)
    from mbm.gallery import Gallery
    from mbm.models import Encoder

MAX_WEIGHT = 100.0  # a term's weight; the sum is normalised, so only ratios matter and this allows 10,000:1
WEIGHT = re.compile(r"^([+-]?(?:\d+(?:\.\d*)?|\.\d+))\s*(?:x\s+|[*:]\s*)(.+)$", re.S)


@dataclass(frozen=True)
class Term:
    """One part of a query: `weight` times the embedding of a text, an image or a gallery item."""
    weight: float
    kind: str  # "text" | "image" | "item"
    value: object  # str for text; a path, PIL image or `(D,)` embedding for image; an int id for item

    def __post_init__(self):
        if self.kind not in ("text", "image", "item"):
            raise ValueError(f"unknown query term kind {self.kind!r}; use 'text', 'image' or 'item'")


@dataclass(frozen=True)
class Query:
    """What a person asks for, parsed once at the edge (page, command line, API) and passed on as it is: a weighted
    sum of terms, from query text (the syntax above), an image (or its embedding) and a gallery item."""
    terms: tuple[Term, ...]

    @classmethod
    def parse(cls, text: str | Query | None = None, image: object = None, image_weight: float = 1.0,
              item: int | None = None) -> Query:
        """The query of what was given; `text` may be a `Query` already, to which the image and item are added.

        Raises:
            InputError: nothing was given, or the text is not a query (see `parse_query`).
        """
        terms = list(text.terms) if isinstance(text, Query) else parse_query(text) if text and text.strip() else []
        if image is not None:
            terms.append(Term(image_weight, "image", image))
        if item is not None:
            terms.append(Term(1.0, "item", int(item)))
        if not terms:
            raise InputError("the query is empty: type some text, or give an image")
        return cls(tuple(terms))

    @property
    def reads_files(self) -> bool:
        """Whether a term names an image file (`@photo.jpg`), which reads a file of the machine answering."""
        return any(t.kind == "image" and isinstance(t.value, (str, Path)) for t in self.terms)

    @property
    def kinds(self) -> str:
        """The kinds of its terms in words, e.g. "text", "text+image"."""
        return "+".join(dict.fromkeys(t.kind for t in self.terms))


@dataclass(frozen=True)
class Hit:
    """One search result."""
    id: int
    path: Path  # the original file
    caption: str
    score: float  # cosine similarity to the query, in [-1, 1]
    thumbnail: Path | None  # a cached JPEG of at most 256 px, for pages (a video's: its best frame)
    relpath: str = ""  # the path inside the gallery folder, safe to show to people
    start: float | None = None  # a video's moment: from `start` to `end` seconds, best at `best`; None for an image
    end: float | None = None
    best: float | None = None

    @property
    def span(self) -> str:
        """A video moment's `mm:ss-mm:ss`; "" for an image."""
        return "" if self.start is None else Moment(self.start, self.end, self.best, self.score).label()

    @property
    def where(self) -> str:
        """The file inside the gallery, and for a video the moment: `clips/a.mp4@00:01-00:05`."""
        return f"{self.relpath}@{self.span}" if self.span else self.relpath


def parse_query(text: str) -> list[Term]:
    """Terms of a query string (see the module docstring), after `clean_text`.

    Raises:
        ValueError: the query is empty, a term has no words (only punctuation), or the syntax is broken.
    """
    parts = _split_terms(clean_text(text))
    if not parts:
        raise InputError("the query is empty: type some text, or give an image")
    return [_parse_term(sign, body) for sign, body in parts]


def _split_terms(text: str) -> list[tuple[float, str]]:
    """`(sign, body)` per term. '+'/'-' are operators only outside quotes and after a space (or at the
    start), so "t-shirt" and "3-d" stay words; a quote opens only where a term or its atom starts."""
    parts, sign, body, quote, pending = [], 1.0, "", None, False
    for i, ch in enumerate(text):
        prev = text[i - 1] if i else " "
        if quote is None and ch in "+-" and prev.isspace():
            if body.strip():
                parts.append((sign, body.strip()))
                sign, body = 1.0, ""
            sign *= -1.0 if ch == "-" else 1.0
            pending = True
            continue
        if ch in "\"'" and (quote == ch or (quote is None and (prev.isspace() or prev in "*:@"))):
            quote = None if quote else ch
        body += ch
        pending = pending and not body.strip()
    if quote is not None:
        raise InputError(f"unclosed quote {quote} in the query {text!r}")
    if pending and parts:
        raise InputError(f"the query {text!r} ends with an operator: add a term after it")
    if body.strip():
        parts.append((sign, body.strip()))
    return parts


def _parse_term(sign: float, body: str) -> Term:
    weight, m = sign, WEIGHT.match(body)
    if m:
        weight, body = sign * float(m.group(1)), m.group(2).strip()
        if not abs(weight) <= MAX_WEIGHT:  # also catches inf, from a weight of 400 digits
            raise InputError(f"the weight {m.group(1)[:20]}{'…' if len(m.group(1)) > 20 else ''} is too large: "
                             f"give weights between -{MAX_WEIGHT:g} and {MAX_WEIGHT:g}")
    if body[0] in "\"'" and body[-1] == body[0] and len(body) >= 2:
        return Term(weight, "text", _require_text(body[1:-1]))
    if body.startswith("@"):
        return Term(weight, "image", body[1:].strip().strip("\"'"))
    if re.fullmatch(r"#\d+", body):
        return Term(weight, "item", int(body[1:]))
    return Term(weight, "text", _require_text(body))


def _require_text(text: str) -> str:
    if not text.strip():
        raise InputError("a query term is empty text: type some words between the quotes")
    if not any(ch.isalnum() or unicodedata.category(ch) == "So" for ch in text):  # letters, digits, emoji
        raise InputError(f"{text.strip()!r} has no words in it, only punctuation: type what you are looking for")
    return text.strip()


def query_vector(encoder: Encoder, terms: list[Term], gallery: Gallery | None = None) -> np.ndarray:
    """The unit `(D,)` vector of a weighted sum of terms.

    Raises:
        ValueError: no terms, an item id not in the gallery, or terms that cancel out.
        mbm.data.images.ImageError: an image term that cannot be read.
    """
    if not terms:
        raise InputError("the query is empty: type some text, or give an image")
    total = np.zeros(encoder.embed_dim, np.float32)
    for term in terms:
        total += term.weight * _embed(encoder, term, gallery)
    norm = float(np.linalg.norm(total))
    if norm < 1e-6:
        raise InputError("the query's terms cancel out (their weighted sum is zero): change a weight")
    return total / norm


def _embed(encoder: Encoder, term: Term, gallery: Gallery | None) -> np.ndarray:
    if term.kind == "text":
        return encoder.encode_texts([term.value])[0]
    if term.kind == "image":
        if isinstance(term.value, np.ndarray):  # already embedded by this encoder
            return term.value
        image = term.value if isinstance(term.value, Image.Image) else load_image(term.value)
        return encoder.encode_images([image])[0]
    if gallery is None:
        raise InputError(f"item #{term.value} needs a gallery to look it up in")
    ids, vecs = gallery.image_matrix()
    where = np.flatnonzero(ids == term.value)
    if not len(where) and len(gallery.frames().of(term.value)[1]):  # a video: what its frames have in common
        mean = gallery.frames().of(term.value)[1].mean(axis=0)
        return mean / max(float(np.linalg.norm(mean)), 1e-6)
    if not len(where):
        raise InputError(f"no item #{term.value} in this gallery (it has {len(ids)} searchable images)")
    return vecs[where[0]]


class Results(list):
    """Hits, best first (a list), and `scores`: the query's cosine to every searchable image and video frame of the
    gallery, `(N,)`, what a histogram of the query needs (computed when first asked)."""

    def __init__(self, hits: list[Hit], gallery: Gallery, vector: np.ndarray):
        super().__init__(hits)
        self._gallery, self._vector, self._scores = gallery, vector, None

    @property
    def scores(self) -> np.ndarray:
        if self._scores is None:
            images, frames = self._gallery.image_matrix()[1], self._gallery.frames().vectors
            self._scores = np.concatenate([images @ self._vector, frames @ self._vector])
        return self._scores


def search(gallery: Gallery, query: str | list[Term] | np.ndarray, k: int = 10, threshold: float | None = None,
           exclude: tuple[int, ...] = ()) -> Results:
    """The gallery images closest to a query, best first.

    Args:
        gallery: where to search; its encoder embeds the query.
        query: a query string, a list of `Term`s, or a ready `(D,)` unit vector.
        k: at most this many results.
        threshold: drop results whose cosine score is below it.
        exclude: item ids never returned (e.g. the item a "more like this" started from).
    """
    if k < 1:
        raise InputError(f"k must be at least 1, got {k}")
    vec = query if isinstance(query, np.ndarray) else query_vector(
        gallery.encoder, parse_query(query) if isinstance(query, str) else query, gallery)
    index = gallery.index
    wanted = k + len(exclude)
    # a video's frames may fill many places of the ranking: look further when the gallery has any
    depth = min(len(index), max(4 * wanted, wanted + 64)) if len(gallery.frames().ids) else wanted
    scores, ids = index.search(vec, max(depth, 1))
    found = [(float(s), int(i)) for s, i in zip(scores[0], ids[0]) if i >= 0]
    # a moment whose best frame ranked below what was fetched may trail images that were not fetched: left out
    floor = found[-1][0] if found and depth < len(index) else -np.inf
    frame_of = _frame_items(gallery, [i for _, i in found if i >= FRAME_IDS])
    images = [(s, i) for s, i in found if i < FRAME_IDS]
    videos = list(dict.fromkeys(frame_of[i] for _, i in found if i in frame_of))
    items = {it.id: it for it in gallery.items([i for _, i in images] + videos)}
    hits = [Hit(i, gallery.file(items[i]), items[i].caption, s, gallery.thumbnail(items[i]), items[i].path)
            for s, i in images if i in items]
    for video_id in videos:
        hits += _moments(gallery, items[video_id], vec, floor) if video_id in items else []
    hits.sort(key=lambda h: -h.score)
    keep = [h for h in hits if h.id not in exclude and (threshold is None or h.score >= threshold)][:k]
    return Results(keep, gallery, vec)


def _frame_items(gallery: Gallery, index_ids: list[int]) -> dict[int, int]:
    """`{index id: video item id}` of frames found in the index."""
    frames = gallery.frames()
    row = dict(zip((FRAME_IDS + frames.ids).tolist(), frames.items.tolist()))
    return {i: row[i] for i in index_ids if i in row}


def _moments(gallery: Gallery, item, vec: np.ndarray, floor: float) -> list[Hit]:
    """One hit per moment of a video that matches the query (scored by its best frame), down to `floor`."""
    times, vectors = gallery.frames().of(item.id)
    return [Hit(item.id, gallery.file(item), item.caption, m.score, gallery.frame_thumbnail(item, m.best), item.path,
                m.start, m.end, m.best)
            for m in moments(times, vectors @ vec, every=item.every) if m.score >= floor]


def rank_texts(encoder: Encoder, image: Image.Image | str | Path | np.ndarray, texts: list[str] | None = None,
               gallery: Gallery | None = None, k: int = 10) -> list[tuple[str, float]]:
    """image->text: `(text, cosine)` pairs, best first, from `texts` or else the gallery's captions.

    Duplicate captions are ranked once. Raises ValueError when there is no text to rank.
    """
    if isinstance(image, np.ndarray):
        vec = image
    else:
        vec = encoder.encode_images([image if isinstance(image, Image.Image) else load_image(image)])[0]
    if texts is not None:
        bank = list(dict.fromkeys(check_texts(texts, "text", MAX_TEXTS))) if texts else []
        vecs = encoder.encode_texts(bank) if bank else None
    elif gallery is not None:
        _, captions, caption_vecs = gallery.captions()
        first = {c: i for i, c in reversed(list(enumerate(captions)))}
        bank = list(first)
        vecs = caption_vecs[list(first.values())] if bank else None
    else:
        raise InputError("give texts to rank, or a gallery whose captions to rank")
    if not bank:
        raise InputError("there are no texts to rank: give at least one non-empty text")
    scores = vecs @ vec  # (T,)
    order = np.argsort(-scores, kind="stable")[:k]
    return [(bank[i], float(scores[i])) for i in order]


def score_histogram(scores: np.ndarray, bins: int = 40, include: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """`(counts (bins,), edges (bins + 1,))` of a query's scores over a padded range that holds them all
    (and `include`, e.g. a threshold to draw on the same axis)."""
    marks = [] if include is None else [include]
    lo, hi = (float(scores.min()), float(scores.max())) if len(scores) else (0.0, 1.0)
    lo, hi = min([lo, *marks]), max([hi, *marks])
    pad = max(0.02, 0.05 * (hi - lo))
    return np.histogram(scores, bins=bins, range=(lo - pad, hi + pad))
