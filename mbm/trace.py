"""`pipeline_trace`: the live output of every stage of the model for one image and one text.

The Learn tab's "How it works" walks the seed design's pipeline (pre-processing -> per-modality features ->
projection -> matching -> fusion and head) on a visitor's own example; forward hooks read what each tower
hands to its projection, so the numbers shown are the ones the model really computed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from PIL import Image

from mbm.errors import InputError
from mbm.fusion import COLOUR_GRID, FusedHeads, colour_cells
from mbm.models import Encoder
from mbm.text import clean_text


@dataclass
class TensorSummary:
    what: str  # what this tensor is, in words
    shape: tuple[int, ...]
    norm: float  # L2 norm of all its values
    head: list[float]  # its first values (flattened): it is just numbers


@dataclass
class PipelineTrace:
    model: str
    # 1. pre-processing
    image: Image.Image  # what the model sees: the transform's tensor de-normalised, at model resolution
    pixels: tuple[int, ...]  # the shape of that tensor, (3, H, W)
    text: str
    tokens: list[str]  # what the text tower sees (`Encoder.tokens`)
    n_tokens: int | None  # tokens the whole text takes; more than context_length means it was cut
    context_length: int
    # 2. each modality's own features, before the projection
    image_features: TensorSummary
    text_features: TensorSummary
    # 3. the shared space
    image_embedding: np.ndarray  # (D,) unit vector
    text_embedding: np.ndarray  # (D,) unit vector
    cosine: float  # their dot product: what search ranks by
    logit_scale: float  # zero-shot multiplies cosines by it before the softmax
    colour: np.ndarray | None  # (6, 6, 3) in [0, 1]: the fused heads' colour branch input; None without heads
    # 4. fusion and the head
    answers: dict[str, dict[str, float]]  # fused strategy -> {answer: probability}, best first; {} without heads
    note: str  # which heads answered, or why none did


def pipeline_trace(encoder: Encoder, image: Image.Image, text: str, fused: FusedHeads | None = None,
                   why_not_fused: str = "") -> PipelineTrace:
    """The live output of every stage for one image and one text (a question, for the fused heads).

    Args:
        encoder: the image-text model.
        image: any PIL image.
        text: a caption or a question.
        fused: the fused classifiers of `encoder`'s model, which then answer too; else `why_not_fused` says why not.
    """
    text = clean_text(text or "").strip()
    if image is None or not text:
        raise InputError("give an image and type a text (or a question about it) to follow through the model")
    image = image.convert("RGB")
    pixels = encoder.prepare(image)  # (3, H, W)
    tokens = encoder.tokens(text)
    with _capture(encoder, len(tokens)) as seen:
        image_vec, text_vec = encoder.encode_images([image])[0], encoder.encode_texts([text])[0]
    answers, note, colour = _fused(fused, why_not_fused, image, text)
    return PipelineTrace(encoder.name, _seen_image(encoder, pixels), tuple(pixels.shape), text, tokens,
                         encoder.count_tokens(text), encoder.context_length, seen["image"], seen["text"],
                         image_vec, text_vec, float(image_vec @ text_vec), encoder.logit_scale, colour, answers, note)


def _summary(what: str, x, n: int = 8) -> TensorSummary:
    x = x.detach().float().cpu().numpy()
    return TensorSummary(what, tuple(x.shape), float(np.linalg.norm(x)), [float(v) for v in x.reshape(-1)[:n]])


@contextmanager
def _capture(encoder: Encoder, n_tokens: int):
    """Forward hooks that keep, from this thread's next pass, what each tower hands to its projection."""
    model, seen, me = encoder.model, {}, threading.get_ident()

    def keep(name: str, what: str, pick: Callable):
        def hook(module, args, out):
            if threading.get_ident() == me and name not in seen:  # other threads may share the model
                seen[name] = _summary(what, pick(args, out))
        return hook

    visual = model.visual
    if hasattr(visual, "attnpool"):  # ModifiedResNet: (B, C, h, w) -> attention pooling -> projection
        image_hook = visual.attnpool.register_forward_hook(keep(
            "image", "the last ResNet stage's feature map, before attention pooling and the projection",
            lambda a, o: a[0][0]))
    elif hasattr(visual, "ln_post"):  # VisionTransformer
        image_hook = visual.ln_post.register_forward_hook(keep(
            "image", "the vision transformer's output, before the projection", lambda a, o: o[0]))
    else:
        image_hook = visual.register_forward_hook(keep("image", "the image tower's output", lambda a, o: o[0]))
    if hasattr(model, "ln_final") and getattr(model, "text_pool_type", "argmax") == "argmax":
        text_hook = model.ln_final.register_forward_hook(keep(
            "text", "the text transformer's output at the end-of-text token (it sums up the whole text), "
            "before the projection", lambda a, o: o[0, max(0, n_tokens - 1)]))
    else:
        text_tower = getattr(model, "text", None) or model
        text_hook = text_tower.register_forward_hook(keep("text", "the text tower's output", lambda a, o: o[0]))
    try:
        yield seen
    finally:
        image_hook.remove()
        text_hook.remove()


def _seen_image(encoder: Encoder, pixels) -> Image.Image:
    """The transform's `(3, H, W)` tensor back to a picture: undo the Normalize step, clip to [0, 1]."""
    import torch

    norm = next((t for t in getattr(encoder.preprocess, "transforms", []) if hasattr(t, "std")), None)
    x = pixels.float()
    if norm is not None:
        x = x * torch.tensor(norm.std).view(3, 1, 1) + torch.tensor(norm.mean).view(3, 1, 1)
    return Image.fromarray((x.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))


def _fused(fused: FusedHeads | None, why_not: str, image: Image.Image, text: str
           ) -> tuple[dict[str, dict[str, float]], str, np.ndarray | None]:
    """(answers of the attention and concat heads, a note, the colour branch's input), or ({}, why not, None)."""
    if fused is None:
        return {}, why_not or "no fused heads were given to this trace", None
    strategies = tuple(s for s in ("attention", "concat") if s in fused.heads) or tuple(fused.heads)
    colour = colour_cells([image])[0].reshape(COLOUR_GRID, COLOUR_GRID, 3)
    over = fused.backbone if fused.backbone == fused.encoder.name else f"{fused.backbone} (reading its own features)"
    note = f"the {' and '.join(strategies)} heads trained over {over} answer"
    return fused.answers(image, text, strategies), note, colour
