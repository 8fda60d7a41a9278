"""Zero-shot classification: labels x prompt templates -> class prototypes -> probabilities.

A class prototype is the mean of the normalised embeddings of its label in every template
(CLIP's prompt ensembling), normalised again; an image's probabilities are the softmax of its
cosine to each prototype times the model's logit scale.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from mbm.errors import InputError
from mbm.models import Encoder

if TYPE_CHECKING:
    from mbm.gallery import Gallery
from mbm.text import MAX_LABELS, MAX_TEMPLATES, check_prompts, check_texts, fill

log = logging.getLogger(__name__)
DEFAULT_TEMPLATES = ("a photo of a {}.", "a {}.", "a drawing of a {}.", "a picture of a {}.")


def prompts(label: str, templates: tuple[str, ...] | list[str] = DEFAULT_TEMPLATES) -> list[str]:
    """The prompts of one label, e.g. "a photo of an orange." ("{}" marks where the label goes; see `fill`)."""
    return [fill(t, label) for t in templates]


def prototypes(encoder: Encoder, labels: list[str], templates=DEFAULT_TEMPLATES) -> np.ndarray:
    """`(L, D)` float32 unit rows: the averaged template embedding of each label."""
    texts = [p for label in labels for p in prompts(label, templates)]
    return _ensemble(encoder.encode_texts(texts).reshape(len(labels), len(templates), -1))


def _ensemble(emb: np.ndarray) -> np.ndarray:
    """`(L, T, D)` template embeddings -> `(L, D)` unit prototypes: their mean, normalised again."""
    proto = emb.mean(axis=1)
    return proto / np.linalg.norm(proto, axis=1, keepdims=True)


def probabilities(encoder: Encoder, image_emb: np.ndarray, protos: np.ndarray) -> np.ndarray:
    """Softmax over labels of `logit_scale * cosine`, for `(N, D)` image embeddings -> `(N, L)`."""
    logits = encoder.logit_scale * image_emb @ protos.T
    logits -= logits.max(axis=1, keepdims=True)
    e = np.exp(logits)
    return e / e.sum(axis=1, keepdims=True)


@dataclass
class ZeroShot:
    """A zero-shot answer: `probs` from the averaged prototypes, and what each template alone says."""
    probs: dict[str, float]  # label -> probability, best first
    per_template: dict[str, dict[str, float]]  # template -> label -> probability
    truncated: list[str]  # prompts longer than the tokenizer's context, which the model saw cut short


def clean_labels(labels: list[str]) -> list[str]:
    """Labels cleaned (`mbm.text.clean_text`), stripped, empty ones dropped and duplicates merged (first spelling
    kept).

    Raises InputError for fewer than two distinct labels, more than `MAX_LABELS`, or one over `MAX_TEXT_CHARS`."""
    cleaned = list(dict.fromkeys(check_texts(labels, "label", None, least=0)))
    if len(cleaned) < 2:
        raise InputError(f"give at least two different labels to choose between (got {cleaned or 'none'})")
    if len(cleaned) > MAX_LABELS:
        raise InputError(f"{len(cleaned):,} labels is too many: give at most {MAX_LABELS:,}")
    return cleaned


def clean_templates(templates: list[str] | tuple[str, ...] | None) -> list[str]:
    """Templates cleaned and stripped, blanks and duplicates dropped (default `DEFAULT_TEMPLATES`); InputError for
    none, more than `MAX_TEMPLATES`, or one over `MAX_TEXT_CHARS`."""
    if not templates:
        return list(DEFAULT_TEMPLATES)
    try:
        return list(dict.fromkeys(check_texts(templates, "prompt template", MAX_TEMPLATES)))
    except InputError as e:
        raise InputError(f"{e} (a template is a text with {{}} where the label goes, e.g. 'a photo of a {{}}.')") \
            from None


def zero_shot(encoder: Encoder, image: Image.Image | np.ndarray, labels: list[str],
              templates: list[str] | tuple[str, ...] | None = None) -> ZeroShot:
    """Classify one image among `labels` with prompt-ensembled class prototypes.

    Args:
        encoder: the image-text model.
        image: a PIL image (any mode), or its `(D,)` embedding from this encoder.
        labels: two or more class names; blanks and duplicates are dropped.
        templates: prompt templates with "{}" where the label goes (default `DEFAULT_TEMPLATES`); the label is
            substituted as plain text (`mbm.text.fill`), nothing else in a template is interpreted.
    Returns:
        `ZeroShot` with the ensemble's probabilities and each template's own; a prompt cut short by the
        tokenizer is listed in `truncated` and warned about (`UserWarning`).
    """
    labels, templates = clean_labels(labels), clean_templates(templates)
    check_prompts(len(labels), len(templates))
    texts = [p for label in labels for p in prompts(label, templates)]
    truncated = [t for t in texts if (encoder.count_tokens(t) or 0) > encoder.context_length]
    if truncated:
        warnings.warn(f"{len(truncated)} prompt(s) exceed the model's {encoder.context_length}-token context and "
                      f"were truncated, e.g. {truncated[0][:80]!r}", UserWarning, stacklevel=2)
    emb = encoder.encode_texts(texts).reshape(len(labels), len(templates), -1)  # (L, T, D)
    image_emb = image[None] if isinstance(image, np.ndarray) else encoder.encode_images([image])  # (1, D)
    protos = _ensemble(emb)
    ranked = lambda p: dict(sorted(zip(labels, map(float, p)), key=lambda kv: -kv[1]))
    per_template = {t: ranked(probabilities(encoder, image_emb, emb[:, j])[0]) for j, t in enumerate(templates)}
    return ZeroShot(ranked(probabilities(encoder, image_emb, protos)[0]), per_template, truncated)


@dataclass
class Timeline:
    """Zero-shot over time: each label's probability at each sampled frame of a video."""
    times: np.ndarray  # (F,) seconds
    labels: list[str]  # cleaned, in the order of the columns
    probs: np.ndarray  # (F, L), rows sum to 1
    truncated: list[str]  # prompts the tokenizer cut short


def zero_shot_video(encoder: Encoder, path, labels: list[str], templates: list[str] | tuple[str, ...] | None = None,
                    every: float = 1.0, limits=None, batch: int = 32) -> Timeline:
    """Zero-shot classification of a video's frames, one every `every` seconds (`mbm.video.sample`, no cuts), with
    the prompt-ensembled prototypes of `zero_shot`, computed once. Frames are embedded `batch` at a time.

    Raises:
        VideoError: not a usable video, beyond `limits` (default `mbm.video.Limits()`), or damaged part way.
        InputError: labels or templates that `zero_shot` refuses.
    """
    from mbm import video
    labels, templates = clean_labels(labels), clean_templates(templates)
    check_prompts(len(labels), len(templates))
    texts = [p for label in labels for p in prompts(label, templates)]
    truncated = [t for t in texts if (encoder.count_tokens(t) or 0) > encoder.context_length]
    protos = _ensemble(encoder.encode_texts(texts).reshape(len(labels), len(templates), -1))  # (L, D)
    times, probs, frames = [], [], []
    side = max(64, encoder.image_size)
    for frame in video.sample(path, every=every, side=side, cut_threshold=None, limits=limits or video.Limits()):
        frames.append(frame)
        if len(frames) == batch:
            probs.append(probabilities(encoder, encoder.encode_images([f.image for f in frames]), protos))
            times, frames = times + [f.t for f in frames], []
    if frames:
        probs.append(probabilities(encoder, encoder.encode_images([f.image for f in frames]), protos))
        times += [f.t for f in frames]
    return Timeline(np.array(times), labels, np.vstack(probs), truncated)


def neighbour_vote(scores: np.ndarray, neighbour_labels: list[str], labels: list[str],
                   temperature: float = 0.05) -> np.ndarray:
    """`(L,)` probabilities: a vote of the k nearest labelled images, each weighted by `exp(cosine / T)`.

    Neighbours whose label is not among `labels` do not vote; with no vote at all the result is uniform.
    """
    index = {label: i for i, label in enumerate(labels)}
    vote = np.zeros(len(labels))
    weights = np.exp((scores - scores.max(initial=0.0)) / temperature)
    for w, label in zip(weights, neighbour_labels):
        if label in index:
            vote[index[label]] += w
    return vote / vote.sum() if vote.sum() > 0 else np.full(len(labels), 1 / len(labels))


def blend(zero_shot_probs: np.ndarray, vote: np.ndarray, alpha: float) -> np.ndarray:
    """`alpha * zero-shot + (1 - alpha) * neighbour vote`: alpha 1 is pure zero-shot, 0 pure k-NN."""
    if not 0 <= alpha <= 1:
        raise InputError(f"alpha must be between 0 and 1, got {alpha}")
    return alpha * zero_shot_probs + (1 - alpha) * vote


def late_fusion(encoder: Encoder, gallery: Gallery, image: Image.Image, labels: list[str] | None = None, k: int = 10,
                alpha: float = 0.5, templates: list[str] | None = None) -> dict[str, dict[str, float]]:
    """Zero-shot blended with a similarity-weighted vote of the k nearest labelled images of `gallery`.

    Labels default to the gallery's own (its sub-folder names). Returns `{"zero-shot": .., "neighbours": ..,
    "blend": ..}`, each `{label: probability}` best first, so the parts can be compared with the whole.
    """
    known = gallery.labels()
    labels = labels or sorted(set(known.values()))
    if not known:
        raise InputError("this gallery's images carry no labels: put them in one sub-folder per label")
    vec = encoder.encode_images([image])[0]  # (D,), for both parts
    zs = zero_shot(encoder, vec, labels, templates)
    labels = list(zs.probs)  # cleaned, in the ensemble's order
    scores, ids = gallery.index.search(vec, min(len(gallery), 4 * k))
    pairs = [(s, known[i]) for s, i in zip(scores[0], ids[0]) if i in known][:k]
    vote = neighbour_vote(np.array([s for s, _ in pairs]), [lab for _, lab in pairs], labels)
    zs_p = np.array([zs.probs[label] for label in labels])
    ranked = lambda p: dict(sorted(zip(labels, map(float, p)), key=lambda kv: -kv[1]))
    return {"zero-shot": zs.probs, "neighbours": ranked(vote), "blend": ranked(blend(zs_p, vote, alpha))}
