"""Zero-shot classification: labels x prompt templates -> class prototypes -> probabilities.

A class prototype is the mean of the normalised embeddings of its label in every template
(CLIP's prompt ensembling), normalised again; an image's probabilities are the softmax of its
cosine to each prototype times the model's logit scale.
"""

from __future__ import annotations

import numpy as np

from mbm.data.language import fix_articles
from mbm.models import Encoder

DEFAULT_TEMPLATES = ("a photo of a {}.", "a {}.", "a drawing of a {}.", "a picture of a {}.")


def prompts(label: str, templates: tuple[str, ...] | list[str] = DEFAULT_TEMPLATES) -> list[str]:
    """The prompts of one label, e.g. "a photo of an orange." ("{}" marks where the label goes)."""
    return [fix_articles(t.format(label)) if "{}" in t else f"{t} {label}" for t in templates]


def prototypes(encoder: Encoder, labels: list[str], templates=DEFAULT_TEMPLATES) -> np.ndarray:
    """`(L, D)` float32 unit rows: the averaged template embedding of each label."""
    texts = [p for label in labels for p in prompts(label, templates)]
    emb = encoder.encode_texts(texts).reshape(len(labels), len(templates), -1)  # (L, T, D)
    proto = emb.mean(axis=1)
    return proto / np.linalg.norm(proto, axis=1, keepdims=True)


def probabilities(encoder: Encoder, image_emb: np.ndarray, protos: np.ndarray) -> np.ndarray:
    """Softmax over labels of `logit_scale * cosine`, for `(N, D)` image embeddings -> `(N, L)`."""
    logits = encoder.logit_scale * image_emb @ protos.T
    logits -= logits.max(axis=1, keepdims=True)
    e = np.exp(logits)
    return e / e.sum(axis=1, keepdims=True)
