"""How the model scores images against texts, as tables: the similarity matrix and the prompt lab.

The similarity matrix is the CLIP paper's figure (N images against their own N captions, cosine and softmax);
the prompt lab is zero-shot of one image template by template and ensembled, with the tokens each prompt became.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from mbm.classify import clean_labels, prompts, zero_shot
from mbm.errors import InputError
from mbm.explore._cache import whole
from mbm.models import Encoder

if TYPE_CHECKING:
    from mbm.gallery import Gallery

MIN_PAIRS, MAX_PAIRS = 2, 32  # the similarity matrix's N: fewer says nothing, more is unreadable


@dataclass
class SimilarityMatrix:
    images: list[int]  # item ids of the sampled images (rows), in order
    thumbnails: list[Path | None]  # one per row
    captions: list[str]  # the same items' captions (columns): pair i sits at [i, i]
    cosine: np.ndarray  # (n, n) cosine of image row i with caption column j
    probs: np.ndarray  # (n, n) softmax over each row of logit_scale * cosine: image -> which caption
    logit_scale: float  # the model's learned 1/temperature
    diagonal_hits: int  # rows whose best caption is their own
    softmax: bool  # whether the page asked to show `probs` rather than `cosine`


def similarity_matrix(gallery: Gallery, n: int = 8, seed: int = 0, softmax: bool = False) -> SimilarityMatrix:
    """`n` images with distinct captions (sampled by `seed`) against those captions, from stored vectors.

    Raises:
        ValueError: `n` outside 2..32, or a gallery with fewer than two distinct captions.
    """
    n = whole(n, MIN_PAIRS, MAX_PAIRS, f"pick between {MIN_PAIRS} and {MAX_PAIRS} images for the matrix, got {n!r}")
    ids, images = gallery.image_matrix()
    cids, texts, captions = gallery.captions()
    row = {int(i): r for r, i in enumerate(ids.tolist())}
    first = {}  # caption -> (image row, caption row) of its first item: duplicate captions would tie
    for c, (i, text) in enumerate(zip(cids, texts)):
        if i in row and text.strip():
            first.setdefault(text, (row[i], c))
    if len(first) < MIN_PAIRS:
        raise InputError("this gallery has no captions to pair with its images (it needs at least two different "
                         "ones): give images a NAME.txt beside them, or readable file names")
    candidates = list(first.values())
    pairs = [candidates[p] for p in np.random.default_rng(seed).choice(len(candidates), min(n, len(candidates)),
                                                                       replace=False)]
    cosine = images[[r for r, _ in pairs]] @ captions[[c for _, c in pairs]].T  # (n, n)
    scale = gallery.encoder.logit_scale
    logits = scale * cosine
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    chosen = [int(ids[r]) for r, _ in pairs]
    items = {it.id: it for it in gallery.items(chosen)}
    return SimilarityMatrix(chosen, [gallery.thumbnail(items[i]) if i in items else None for i in chosen],
                            [texts[c] for _, c in pairs], cosine, probs, scale,
                            int((cosine.argmax(axis=1) == np.arange(len(pairs))).sum()), bool(softmax))


@dataclass
class PromptInfo:
    text: str  # the prompt, label filled in
    tokens: list[str]  # what the model sees (see `Encoder.tokens`), cut at the context length
    n_tokens: int | None  # tokens the whole prompt takes, markers included (None if the tokenizer cannot say)
    truncated: bool  # n_tokens > context_length: the model saw it cut short


@dataclass
class PromptLab:
    labels: list[str]  # cleaned, in the columns' order
    templates: list[str]  # cleaned, in the rows' order
    table: np.ndarray  # (T, L) probabilities from each template alone; each row sums to 1
    ensemble: np.ndarray  # (L,) probabilities from the averaged prototypes (what `zero_shot` answers)
    prompts: list[list[PromptInfo]]  # [template][label]
    context_length: int
    truncated: list[str]  # prompts the model saw cut short


def prompt_lab(encoder: Encoder, image: Image.Image | np.ndarray, labels: list[str],
               templates: list[str] | None = None) -> PromptLab:
    """Zero-shot of one image, template by template and ensembled, with each prompt's tokens.

    Same arguments, cleaning and errors as `mbm.classify.zero_shot` (which it runs), and like it, warns
    (`UserWarning`) when a prompt is truncated."""
    zs = zero_shot(encoder, image, labels, templates)
    names, rows = clean_labels(labels), list(zs.per_template)  # zero_shot's own cleaning and order
    table = np.array([[zs.per_template[t][label] for label in names] for t in rows])  # (T, L)
    infos = [[_prompt_info(encoder, prompts(label, [t])[0]) for label in names] for t in rows]
    return PromptLab(names, rows, table, np.array([zs.probs[label] for label in names]), infos,
                     encoder.context_length, zs.truncated)


def _prompt_info(encoder: Encoder, text: str) -> PromptInfo:
    n = encoder.count_tokens(text)
    return PromptInfo(text, encoder.tokens(text), n, n is not None and n > encoder.context_length)
