"""`Encoder`: one open_clip model with its transform and tokenizer, as numpy in and out.

Everything above this layer (gallery, search, classifiers, the page) sees images and texts go in
and `(N, D)` float32 L2-normalised rows come out; device, precision, batching and
`torch.inference_mode()` stay here.
"""

from __future__ import annotations

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

    def __repr__(self) -> str:
        return f"Encoder({self.name!r}, dim={self.embed_dim}, device={self.device}, precision={self.precision})"

    def _autocast(self):
        dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(self.precision)
        return torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None)

    def encode_images(self, images: Sequence[Image.Image], batch_size: int = 64) -> np.ndarray:
        """Embed PIL images (any mode; converted to RGB). Returns `(N, D)` float32, unit rows."""
        def run(chunk):
            x = torch.stack([self.preprocess(im.convert("RGB")) for im in chunk])  # (B, 3, H, W)
            return self.model.encode_image(x.to(self.device, non_blocking=True))
        return self._batched(list(images), batch_size, run)

    def encode_texts(self, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
        """Embed texts (truncated to `context_length` tokens). Returns `(N, D)` float32, unit rows."""
        def run(chunk):
            tokens = self.tokenizer(list(chunk))  # (B, context_length)
            return self.model.encode_text(tokens.to(self.device, non_blocking=True))
        return self._batched(list(texts), batch_size, run)

    def _batched(self, items: list, batch_size: int, run: Callable) -> np.ndarray:
        out = np.empty((0, self.embed_dim), np.float32)
        parts = []
        with torch.inference_mode(), self._autocast():
            for start in range(0, len(items), batch_size):
                feats = run(items[start:start + batch_size]).float()  # (B, D)
                parts.append(F.normalize(feats, dim=-1).cpu().numpy())
        return np.concatenate(parts) if parts else out
