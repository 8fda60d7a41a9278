"""`Encoder`: one open_clip model with its transform and tokenizer, as numpy in and out.

Everything above this layer (gallery, search, classifiers, the page) sees images and texts go in
and `(N, D)` float32 L2-normalised rows come out; device, precision, batching and
`torch.inference_mode()` stay here.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image


class Encoder:
    """An image-text encoder ready for inference.

    Attributes:
        name: the spec it was created from, e.g. "mbm-shapes" or "ViT-B-32:laion2b_s34b_b79k".
        embed_dim: D, the width of every embedding.
        device: the torch device the model runs on.
        precision: "fp32", "fp16" or "bf16".
        logit_scale: the learned temperature, already exponentiated (CLIP's 1/T, at most 100).
        context_length: the tokenizer's maximum number of tokens; longer texts are truncated.
        image_size: the side of the square the model sees; decoders need no more pixels than this.
        key: `name` plus a short fingerprint of the weights; stored embeddings are filed under it, so
            retrained weights behind the same name never mix with embeddings of the old ones.
    """

    def __init__(self, model: torch.nn.Module, preprocess: Callable[[Image.Image], torch.Tensor],
                 tokenizer: Callable, name: str, device: torch.device, precision: str = "fp32"):
        self.model = model.eval()
        self.preprocess = preprocess
        self.tokenizer = tokenizer
        self.name = name
        self.device = torch.device(device)
        self.precision = precision
        self.embed_dim = int(model.text_projection.shape[1] if hasattr(model, "text_projection")
                             and model.text_projection is not None else model.visual.output_dim)
        self.logit_scale = float(model.logit_scale.detach().exp().clamp(max=100).item())
        self.context_length = int(getattr(tokenizer, "context_length", 77))
        size = getattr(model.visual, "image_size", 224)
        self.image_size = int(max(size) if isinstance(size, (tuple, list)) else size)
        self.key = f"{name}#{_fingerprint(model)}"

    def __repr__(self) -> str:
        return f"Encoder({self.name!r}, dim={self.embed_dim}, device={self.device}, precision={self.precision})"

    def _autocast(self):
        dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(self.precision)
        return torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None)

    def prepare(self, image: Image.Image) -> torch.Tensor:
        """The model's transform of one image: `(3, H, W)` float32 on the CPU. Thread-safe, so decoding
        pools can run it beside the model."""
        return self.preprocess(image.convert("RGB"))

    def encode_images(self, images: Sequence[Image.Image], batch_size: int = 64) -> np.ndarray:
        """Embed PIL images (any mode; converted to RGB). Returns `(N, D)` float32, unit rows."""
        def run(chunk):
            x = torch.stack([self.prepare(im) for im in chunk])  # (B, 3, H, W)
            return self.model.encode_image(x.to(self.device, non_blocking=True))
        return self._batched(list(images), batch_size, run)

    def encode_pixels(self, pixels: torch.Tensor, batch_size: int = 64) -> np.ndarray:
        """Embed images already passed through `prepare` and stacked: `(N, 3, H, W)` -> `(N, D)`."""
        run = lambda chunk: self.model.encode_image(chunk.to(self.device, non_blocking=True))
        return self._batched(pixels, batch_size, run)

    def encode_texts(self, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
        """Embed texts (truncated to `context_length` tokens). Returns `(N, D)` float32, unit rows."""
        def run(chunk):
            tokens = self.tokenizer(list(chunk))  # (B, context_length)
            return self.model.encode_text(tokens.to(self.device, non_blocking=True))
        return self._batched(list(texts), batch_size, run)

    def count_tokens(self, text: str) -> int | None:
        """Tokens `text` takes including start/end markers (None if the tokenizer cannot say);
        more than `context_length` means the model sees it truncated."""
        if hasattr(self.tokenizer, "encode"):  # open_clip's SimpleTokenizer (BPE ids without markers)
            return len(self.tokenizer.encode(text)) + 2
        inner = getattr(self.tokenizer, "tokenizer", None)  # open_clip's HFTokenizer wraps a transformers one
        if callable(inner):
            return len(inner(text)["input_ids"])
        return None

    def tokens(self, text: str) -> list[str]:
        """The tokens the model sees for `text`, start and end markers included, cut at `context_length` the
        way its tokenizer cuts (open_clip keeps the start marker, the first `context_length - 2` tokens and the
        end marker). Spelled as the vocabulary spells them, bytes decoded: "</w>" closes a word, so
        "a red circle" is `["<start_of_text>", "a</w>", "red</w>", "circle</w>", "<end_of_text>"]`.
        [] if the tokenizer cannot say."""
        tok = self.tokenizer
        if isinstance(getattr(tok, "decoder", None), dict):  # open_clip's SimpleTokenizer (byte-level BPE)
            ids = tok([text])[0].tolist()  # (context_length,), zero-padded after the end marker
            ids = ids[:ids.index(tok.eot_token_id) + 1] if tok.eot_token_id in ids else ids
            def readable(token: str) -> str:  # "Ã©</w>" -> "é</w>": the BPE's bytes decoded; markers stay
                word, end = (token[:-4], "</w>") if token.endswith("</w>") else (token, "")
                if not all(c in tok.byte_decoder for c in word):
                    return token
                return bytes(tok.byte_decoder[c] for c in word).decode("utf-8", errors="replace") + end
            return [readable(tok.decoder[i]) for i in ids]
        inner = getattr(tok, "tokenizer", None)  # open_clip's HFTokenizer wraps a transformers one
        if hasattr(inner, "convert_ids_to_tokens"):
            clean = getattr(tok, "clean_fn", lambda s: s)
            ids = inner(clean(text), max_length=self.context_length, truncation=True)["input_ids"]
            return inner.convert_ids_to_tokens(ids)
        return []

    def _batched(self, items: Sequence, batch_size: int, run: Callable) -> np.ndarray:
        out = np.empty((0, self.embed_dim), np.float32)
        parts = []
        with torch.inference_mode(), self._autocast():
            for start in range(0, len(items), batch_size):
                feats = run(items[start:start + batch_size]).float()  # (B, D)
                parts.append(F.normalize(feats, dim=-1).cpu().numpy())
        return np.concatenate(parts) if parts else out


def _fingerprint(model: torch.nn.Module) -> str:
    """8 hex digits that change when the weights change; reads a few values of each tensor, not all."""
    h = hashlib.sha1()
    for name, t in model.state_dict().items():
        flat = t.detach().reshape(-1)[:16].float().cpu().numpy()
        h.update(name.encode() + str(tuple(t.shape)).encode() + flat.tobytes())
    return h.hexdigest()[:8]
