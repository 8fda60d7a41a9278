"""`Encoder`: one open_clip model with its transform and tokenizer, as numpy in and out.

Everything above this layer (gallery, search, classifiers, the page) sees images and texts go in
and `(N, D)` float32 L2-normalised rows come out; device, precision, batching and
`torch.inference_mode()` stay here, and so do the fast paths:

- channels_last: a convolutional image tower on the CPU runs with NHWC weights and inputs (on by default there:
  the same numbers, faster);
- a `Runner`: another way to run both towers, used instead of `model.encode_image` / `encode_text`: a bf16 copy
  of the model on a CPU that computes in bf16, or ONNX Runtime sessions (`mbm.models._onnx`). The torch model
  stays as `model`: training and `mbm.fusion` use it directly, and while a forward hook watches it (`mbm.trace`)
  calls run it instead of the runner, so the hooks see what comes out;
- on CUDA, fp16 autocast and inputs copied from pinned memory without blocking;
- texts cost their own length: for open_clip's causal text towers (`CLIP` with argmax pooling, as OpenAI's and
  OpenCLIP's are) token ids are cut after the batch's longest text instead of padded to the context length (the
  causal mask makes the result the same), batches are formed from texts of similar length, and a small batch of
  texts (a query) runs on one CPU thread, which is faster than two on a busy machine (docs/BENCHMARKS.md, issue 19).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.nn.modules import module as nn_module

from mbm.text import bound_for_tokenizer, bound_word_cache

BIG_IMAGE = 160  # image towers at least this wide (224 px ViTs) are compute-bound: smaller batches on the CPU
SMALL_TEXT = 8  # text batches up to this many run on one CPU thread on a busy machine (a query; issue 19)
_THREADS_LOCK = threading.Lock()  # torch's thread count is process-wide: one small-text call changes it at a time


@dataclass
class Runner:
    """A faster way to run both towers. `image` takes `(B, 3, H, W)` float32 pixels and `text` `(B, L)` token ids,
    both on the CPU; each returns `(B, D)` embeddings, not yet normalised, on any device and in any float dtype."""
    image: Callable[[torch.Tensor], torch.Tensor]
    text: Callable[[torch.Tensor], torch.Tensor]
    what: str  # for people: "bf16 copy", "onnxruntime CPUExecutionProvider"
    short_text: bool = False  # `text` takes token ids cut after the longest text (see `causal_text`)


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
        channels_last: the image tower runs in NHWC memory format (default: on the CPU for convolutional towers).
        backend: "torch", or "onnx" once `use_runner` installed ONNX Runtime sessions.
        runner: the fast path in use instead of the torch model's own methods, or None (the plain path).
        image_batch, text_batch: the default batch sizes (the fastest measured for towers of this kind).

    Args:
        precision: "bf16" on the CPU runs a bf16 copy of the model (fast with AVX512-BF16 or AMX; autocast is not
            used there, as it re-casts every weight on every call); on CUDA fp16/bf16 are autocast.
        channels_last: None decides by device and tower, as above.
    """

    def __init__(self, model: torch.nn.Module, preprocess: Callable[[Image.Image], torch.Tensor],
                 tokenizer: Callable, name: str, device: torch.device, precision: str = "fp32", *,
                 channels_last: bool | None = None):
        self.model = model.eval()
        self.preprocess = preprocess
        self.tokenizer = bound_word_cache(tokenizer)  # people's words must not fill memory
        self.name = name
        self.device = torch.device(device)
        self.precision = precision
        proj = getattr(model, "text_projection", None)  # a matrix, or a Linear (open_clip's proj_type "linear")
        self.embed_dim = int(proj.out_features if isinstance(proj, torch.nn.Linear)
                             else proj.shape[1] if proj is not None else model.visual.output_dim)
        self.logit_scale = float(model.logit_scale.detach().exp().clamp(max=100).item())
        self.context_length = int(getattr(tokenizer, "context_length", 77))
        size = getattr(model.visual, "image_size", 224)
        self.image_size = int(max(size) if isinstance(size, (tuple, list)) else size)
        self.key = f"{name}#{_fingerprint(model)}"  # of the weights as given, before any conversion below
        big = self.image_size >= BIG_IMAGE and self.device.type == "cpu"
        self.image_batch, self.text_batch = (16, 32) if big else (64, 256)
        self.channels_last = _is_conv_tower(model.visual) and self.device.type == "cpu" \
            if channels_last is None else bool(channels_last)
        self.model.to(memory_format=torch.channels_last if self.channels_last else torch.contiguous_format)
        self._modules = list(self.model.modules())  # checked for forward hooks before each batch
        self.short_text = trims_text(model)  # the torch model takes token ids cut after the longest text
        self.backend, self.runner = "torch", _bf16_runner(self)
        self.scope = None  # a `mbm.models.scope.Scope` when the model folder ships one (see `unseen_words`)

    def __repr__(self) -> str:
        extra = f", backend={self.backend}" if self.backend != "torch" else ""
        return (f"Encoder({self.name!r}, dim={self.embed_dim}, device={self.device}, "
                f"precision={self.precision}{extra})")

    def use_runner(self, runner: Runner | None, backend: str = "torch") -> None:
        """Run both towers with `runner` from now on (None: the torch model's own methods)."""
        self.runner, self.backend = runner, backend

    def _autocast(self):
        """fp16/bf16 autocast on CUDA (and MPS); off on the CPU, where bf16 means the runner's bf16 copy."""
        dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(self.precision)
        return torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None and self.device.type != "cpu")

    def _to_device(self, x: torch.Tensor) -> torch.Tensor:
        """A CPU batch on the model's device; on CUDA from page-locked memory, so the copy does not block."""
        if self.device.type == "cuda" and x.device.type == "cpu":
            x = x.pin_memory()
        return x.to(self.device, non_blocking=True)

    def _hooked(self) -> bool:
        """True while a forward hook watches the torch model (or every module): calls then run the model itself."""
        return bool(nn_module._global_forward_hooks or nn_module._global_forward_pre_hooks) or any(
            m._forward_hooks or m._forward_pre_hooks for m in self._modules)

    def _image(self, pixels: torch.Tensor) -> torch.Tensor:
        """`(B, 3, H, W)` CPU pixels -> `(B, D)` raw embeddings, by the runner unless hooks are watching."""
        if self.runner is not None and not self._hooked():
            return self.runner.image(pixels)
        x = self._to_device(pixels)
        return self.model.encode_image(x.contiguous(memory_format=torch.channels_last) if self.channels_last else x)

    def _text(self, tokens: torch.Tensor) -> torch.Tensor:
        """`(B, L)` CPU token ids -> `(B, D)` raw embeddings, by the runner unless hooks are watching; a small
        batch on one CPU thread when the machine is busy (`machine_busy`)."""
        if self._hooked():  # the model's own call, whole length: what a hook sees does not depend on the batch
            return self.model.encode_text(self._to_device(tokens))
        with self._one_thread() if len(tokens) <= SMALL_TEXT and machine_busy() else contextlib.nullcontext():
            if self.runner is not None:
                return self.runner.text(cut_tokens(tokens) if self.runner.short_text else tokens)
            if self.short_text:
                return causal_text(self.model, self._to_device(cut_tokens(tokens)))
            return self.model.encode_text(self._to_device(tokens))

    @contextlib.contextmanager
    def _one_thread(self):
        """torch on one thread while the block runs, on the CPU; restored after. Calls that shrink the count take
        turns, so none restores another's count. (An ONNX Runtime session keeps the count it was made with.)"""
        if self.device.type != "cpu" or torch.get_num_threads() == 1:
            yield
            return
        with _THREADS_LOCK:
            before = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                yield
            finally:
                torch.set_num_threads(before)

    def prepare(self, image: Image.Image) -> torch.Tensor:
        """The model's transform of one image: `(3, H, W)` float32 on the CPU. Thread-safe, so decoding
        pools can run it beside the model."""
        return self.preprocess(image.convert("RGB"))

    def encode_images(self, images: Sequence[Image.Image], batch_size: int | None = None) -> np.ndarray:
        """Embed PIL images (any mode; converted to RGB), `batch_size` (default `image_batch`) per model call.
        Returns `(N, D)` float32, unit rows."""
        run = lambda chunk: self._image(torch.stack([self.prepare(im) for im in chunk]))  # (B, 3, H, W)
        return self._batched(list(images), batch_size or self.image_batch, run)

    def encode_pixels(self, pixels: torch.Tensor, batch_size: int | None = None) -> np.ndarray:
        """Embed images already passed through `prepare` and stacked: `(N, 3, H, W)` -> `(N, D)`."""
        return self._batched(pixels, batch_size or self.image_batch, self._image)

    def encode_texts(self, texts: Sequence[str], batch_size: int | None = None) -> np.ndarray:
        """Embed texts (truncated to `context_length` tokens), `batch_size` (default `text_batch`) per model call.
        Each text is first bounded (`mbm.text.bound_for_tokenizer`), so no text costs the tokenizer more than a
        fixed amount of work. Returns `(N, D)` float32, unit rows."""
        texts = [bound_for_tokenizer(t) for t in texts]
        batch_size = batch_size or self.text_batch
        if len(texts) <= batch_size or not (self.short_text or getattr(self.runner, "short_text", False)):
            return self._batched(texts, batch_size, lambda chunk: self._text(self.tokenizer(chunk)))
        tokens = self.tokenizer(texts)  # (N, context_length)
        order = torch.argsort(tokens.argmax(dim=1), stable=True)  # by length: each batch is cut after its longest
        out = np.empty((len(texts), self.embed_dim), np.float32)
        out[order.numpy()] = self._batched(tokens[order], batch_size, self._text)
        return out

    def count_tokens(self, text: str) -> int | None:
        """Tokens `text` takes including start/end markers (None if the tokenizer cannot say);
        more than `context_length` means the model sees it truncated."""
        text = bound_for_tokenizer(text)
        if hasattr(self.tokenizer, "encode"):  # open_clip's SimpleTokenizer (BPE ids without markers)
            return len(self.tokenizer.encode(text)) + 2
        inner = getattr(self.tokenizer, "tokenizer", None)  # open_clip's HFTokenizer wraps a transformers one
        if callable(inner):
            return len(inner(text)["input_ids"])
        return None

    def token_ids(self, text: str) -> list[int]:
        """The vocabulary ids of `text`'s tokens as the model sees them, without start and end markers ([] if the
        tokenizer cannot say)."""
        ids, tok = _bpe_ids(self.tokenizer, text) or [], self.tokenizer
        return [i for i in ids if i not in (tok.sot_token_id, tok.eot_token_id)]

    def unseen_words(self, text: str) -> list[str]:
        """The words of `text` this model never read in training ([] when it ships no scope: a pretrained model)."""
        return self.scope.unseen(text, self.token_ids) if self.scope else []

    def tokens(self, text: str) -> list[str]:
        """The tokens the model sees for `text`, start and end markers included, cut at `context_length` the
        way its tokenizer cuts (open_clip keeps the start marker, the first `context_length - 2` tokens and the
        end marker). Spelled as the vocabulary spells them, bytes decoded: "</w>" closes a word, so
        "a red circle" is `["<start_of_text>", "a</w>", "red</w>", "circle</w>", "<end_of_text>"]`.
        [] if the tokenizer cannot say."""
        tok, ids = self.tokenizer, _bpe_ids(self.tokenizer, text)
        text = bound_for_tokenizer(text)
        if ids is not None:  # open_clip's SimpleTokenizer (byte-level BPE)
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


def machine_busy() -> bool:
    """True when the CPUs are mostly in use already (the 1-minute load average at least the core count less a
    half), or the system cannot say. A query's small text batch then runs on one thread: beside busy processes that
    is as fast or faster (a ViT-B-32 query 43 vs 43 ms beside 2, 195 vs 777 ms at load 6), while on an idle machine
    every thread is faster (19 vs 28 ms); docs/BENCHMARKS.md, "Text at its own length"."""
    try:
        return os.getloadavg()[0] >= (os.cpu_count() or 1) - 0.5
    except (AttributeError, OSError):  # Windows has no load average
        return True


def trims_text(model: torch.nn.Module) -> bool:
    """True for an open_clip `CLIP` whose causal text tower pools at the end token (the highest id, OpenAI's
    tokenizer): its embeddings do not change when the padding after a batch's longest text is cut off."""
    from open_clip.model import CLIP
    return isinstance(model, CLIP) and getattr(model, "attn_mask", None) is not None \
        and getattr(model, "text_pool_type", None) == "argmax"


def cut_tokens(tokens: torch.Tensor) -> torch.Tensor:
    """`(B, L)` token ids -> `(B, L')`: the columns up to the batch's last end token (the highest id of each row;
    id 0 is also the "!" token, so the padding is not found by its zeros)."""
    return tokens[:, :max(2, int(tokens.argmax(dim=1).max()) + 1)]


def causal_text(model: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """open_clip `CLIP.encode_text` (not normalised) for `(B, T)` token ids with T up to the context length, for a
    model where `trims_text` holds: positions and causal mask are cut to T, so a short text costs its own length."""
    from open_clip.transformer import text_global_pool
    t, cast = tokens.shape[1], model.transformer.get_cast_dtype()
    x = model.token_embedding(tokens).to(cast) + model.positional_embedding[:t].to(cast)  # (B, T, W)
    x = model.ln_final(model.transformer(x, attn_mask=model.attn_mask[:t, :t]))
    x = text_global_pool(x, tokens, model.text_pool_type)  # (B, W)
    if model.text_projection is None:
        return x
    return model.text_projection(x) if isinstance(model.text_projection, torch.nn.Linear) else x @ model.text_projection


def _bpe_ids(tok, text: str) -> list[int] | None:
    """The ids open_clip's byte-level BPE gives `text`, markers included, up to the end marker (the padding cut off);
    None for another tokenizer."""
    if not isinstance(getattr(tok, "decoder", None), dict):
        return None
    ids = tok([bound_for_tokenizer(text)])[0].tolist()  # (context_length,), zero-padded after the end marker
    return ids[:ids.index(tok.eot_token_id) + 1] if tok.eot_token_id in ids else ids


def _is_conv_tower(visual: torch.nn.Module) -> bool:
    """A convolutional image tower (a ResNet, a ConvNeXt), not a ViT whose only convolution cuts the patches."""
    return sum(isinstance(m, torch.nn.Conv2d) for m in visual.modules()) > 1


def _bf16_runner(encoder: Encoder) -> Runner | None:
    """For bf16 on the CPU, a bf16 copy of the model (3-4x fp32 for a ViT-B-32 with AMX; CPU autocast would re-cast
    every weight on every call, slower than fp32); None elsewhere (the plain path: the model, autocast on CUDA)."""
    if not (encoder.precision == "bf16" and encoder.device.type == "cpu"):
        return None
    model = copy.deepcopy(encoder.model).to(torch.bfloat16)
    fmt = torch.channels_last if encoder.channels_last else torch.contiguous_format
    short = trims_text(model)
    return Runner(image=lambda x: model.encode_image(x.to(torch.bfloat16, memory_format=fmt)),
                  text=(lambda t: causal_text(model, t)) if short else model.encode_text, what="bf16 copy",
                  short_text=short)


def _fingerprint(model: torch.nn.Module) -> str:
    """8 hex digits that change when the weights change; reads a few values of each tensor, not all."""
    h = hashlib.sha1()
    for name, t in model.state_dict().items():
        flat = t.detach().reshape(-1)[:16].float().cpu().numpy()
        h.update(name.encode() + str(tuple(t.shape)).encode() + flat.tobytes())
    return h.hexdigest()[:8]
