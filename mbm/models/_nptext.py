"""open_clip's text tower in numpy, for a query process without torch on the torch backend (issue 19).

A one-off `python -m mbm search "a red circle"` spends seconds importing torch, torchvision and open_clip to embed
four words. CLIP's text tower is small, plain arithmetic (embeddings, pre-norm transformer blocks under a causal
mask, a final norm, the end token's row, a projection), so numpy runs it from the same safetensors file, reading
only the text tower's tensors.

`describe(model)` says whether a loaded torch model's text tower is that plain kind (open_clip's CLIP or
CustomTextCLIP with its TextTransformer: causal mask, argmax pooling, GELU or QuickGELU, no layer scale, no class
token) and how to read it; `NumpyText(weights, spec)` runs it. `mbm.models._query` writes the spec into the
model's `query.json` with the torch tower's vectors of `PROBE` texts, and a query process uses `NumpyText` only
once it has reproduced them, so a checkpoint that open_clip converts on load, or any tower this module does not
know, keeps the full model.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

PROBE = ("a red circle", "un renard roux dans la neige", "キツネ", "x")  # checked before a numpy tower is used
TOLERANCE = 1e-4  # largest difference of unit vectors allowed between numpy and torch on `PROBE`


def describe(model) -> dict | None:
    """How `NumpyText` reads `model`'s text tower, or None when it is not the plain kind it runs."""
    import torch
    from open_clip.transformer import LayerNorm, QuickGELU
    text = getattr(model, "text", None)
    prefix = "text." if text is not None else ""
    tower = text if text is not None else model
    pool = getattr(tower, "pool_type", getattr(tower, "text_pool_type", None))
    blocks = getattr(getattr(tower, "transformer", None), "resblocks", None)
    if blocks is None or pool != "argmax" or getattr(tower, "cls_emb", None) is not None \
            or getattr(tower, "final_ln_after_pool", False) or getattr(tower, "attn_mask", None) is None:
        return None
    t = tower.attn_mask.shape[0]
    causal = torch.full((t, t), float("-inf")).triu_(1)
    if not torch.equal(tower.attn_mask.float().cpu(), causal):
        return None
    acts, eps = set(), set()
    for block in blocks:
        attn = block.attn
        if not (isinstance(attn, torch.nn.MultiheadAttention) and attn.batch_first and attn.in_proj_weight is not None
                and attn.bias_k is None and not hasattr(block, "ln_1_kv")
                and isinstance(block.ls_1, torch.nn.Identity) and isinstance(block.ls_2, torch.nn.Identity)
                and list(dict(block.mlp.named_children())) == ["c_fc", "gelu", "c_proj"]):
            return None
        act = block.mlp.gelu
        if isinstance(act, QuickGELU):
            acts.add("quick_gelu")
        elif isinstance(act, torch.nn.GELU) and act.approximate == "none":
            acts.add("gelu")
        else:
            return None
        norms = (block.ln_1, block.ln_2)
        if not all(isinstance(n, (LayerNorm, torch.nn.LayerNorm)) and n.elementwise_affine for n in norms):
            return None
        eps |= {float(n.eps) for n in norms}
    if not isinstance(tower.ln_final, (LayerNorm, torch.nn.LayerNorm)) or len(acts) != 1:
        return None
    proj = tower.text_projection
    projection = "linear" if isinstance(proj, torch.nn.Linear) else "matrix" if proj is not None else "none"
    return {"prefix": prefix, "layers": len(blocks), "heads": int(blocks[0].attn.num_heads), "act": acts.pop(),
            "eps": max(eps | {float(tower.ln_final.eps)}), "projection": projection,
            "linear_bias": bool(projection == "linear" and proj.bias is not None)}


class NumpyText:
    """The text tower described by `spec`, its tensors mapped from a safetensors file (`_mapped`), computed in
    float32."""

    def __init__(self, weights: str | Path, spec: dict):
        self.spec = spec
        p = spec["prefix"]
        names = ["token_embedding.weight", "positional_embedding", "ln_final.weight", "ln_final.bias"]
        names += {"matrix": ["text_projection"], "none": [],
                  "linear": ["text_projection.weight"] + (["text_projection.bias"] if spec["linear_bias"] else [])
                  }[spec["projection"]]
        parts = ("ln_1.weight", "ln_1.bias", "attn.in_proj_weight", "attn.in_proj_bias", "attn.out_proj.weight",
                 "attn.out_proj.bias", "ln_2.weight", "ln_2.bias", "mlp.c_fc.weight", "mlp.c_fc.bias",
                 "mlp.c_proj.weight", "mlp.c_proj.bias")
        names += [f"transformer.resblocks.{i}.{part}" for i in range(spec["layers"]) for part in parts]
        tensors = _mapped(Path(weights))
        # fp32 tensors stay the file's pages (nothing copied); others become float32, except the token
        # embedding, whose few rows a query needs are converted when looked up
        self.w = {n: tensors[p + n] if n == "token_embedding.weight" or tensors[p + n].dtype == np.float32
                  else np.asarray(tensors[p + n], dtype=np.float32) for n in names}
        # torch's Linear keeps (out, in): a transposed view, which BLAS multiplies without a copy
        for n in list(self.w):
            if n.endswith(("in_proj_weight", "out_proj.weight", "c_fc.weight", "c_proj.weight")) \
                    or n == "text_projection.weight":
                self.w[n] = self.w[n].T

    def __call__(self, ids: np.ndarray) -> np.ndarray:
        """`(N, T)` token ids (T up to the context length) -> `(N, D)` float32, not normalised."""
        w, spec = self.w, self.spec
        n, t = ids.shape
        rows = np.asarray(w["token_embedding.weight"][ids], dtype=np.float32)
        x = (rows + w["positional_embedding"][:t]).reshape(n * t, -1)  # (N*T, W)
        width = x.shape[-1]
        heads = spec["heads"]
        hd = width // heads
        mask = np.triu(np.full((t, t), -np.inf, np.float32), 1)
        for i in range(spec["layers"]):  # rows as one matrix for the linear layers: BLAS's 2-D path is the fast one
            b = f"transformer.resblocks.{i}."
            qkv = self._norm(x, b + "ln_1") @ w[b + "attn.in_proj_weight"] + w[b + "attn.in_proj_bias"]
            q, k, v = qkv.reshape(n, t, 3, heads, hd).transpose(2, 0, 3, 1, 4)  # each (N, H, T, hd)
            scores = (q @ k.transpose(0, 1, 3, 2)) / math.sqrt(hd) + mask
            scores = np.exp(scores - scores.max(-1, keepdims=True))
            att = (scores / scores.sum(-1, keepdims=True)) @ v  # (N, H, T, hd)
            x = x + att.transpose(0, 2, 1, 3).reshape(n * t, width) @ w[b + "attn.out_proj.weight"] \
                + w[b + "attn.out_proj.bias"]
            h = self._norm(x, b + "ln_2") @ w[b + "mlp.c_fc.weight"] + w[b + "mlp.c_fc.bias"]
            h = h * _sigmoid(1.702 * h) if spec["act"] == "quick_gelu" else _gelu(h)
            x = x + h @ w[b + "mlp.c_proj.weight"] + w[b + "mlp.c_proj.bias"]
        x = x.reshape(n, t, width)[np.arange(n), ids.argmax(axis=1)]  # the end token's row: (N, W)
        x = self._norm(x, "ln_final")
        if spec["projection"] == "matrix":
            return (x @ w["text_projection"]).astype(np.float32)
        if spec["projection"] == "linear":
            return (x @ w["text_projection.weight"] + w.get("text_projection.bias", 0)).astype(np.float32)
        return x.astype(np.float32)

    def _norm(self, x: np.ndarray, name: str) -> np.ndarray:
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + self.spec["eps"]) * self.w[name + ".weight"] + self.w[name + ".bias"]


_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32,
           "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}


def _mapped(path: Path) -> dict[str, np.ndarray]:
    """A safetensors file's tensors as read-only numpy arrays over the file's own pages (`np.memmap`): the
    safetensors package's numpy loader copies every tensor, which for a ViT-B-32 text tower is 0.4 s of a query
    process. The format: an 8-byte little-endian header size, a JSON header ({name: dtype, shape, data_offsets}),
    then the data. A tensor of a dtype numpy lacks (bf16) is left out: a tower that needs one fails with KeyError,
    and that model keeps the full path."""
    with open(path, "rb") as f:
        size = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(size))
    data = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + size)
    out = {}
    for name, entry in header.items():
        if name == "__metadata__" or entry["dtype"] not in _DTYPES:
            continue
        start, end = entry["data_offsets"]
        out[name] = data[start:end].view(_DTYPES[entry["dtype"]]).reshape(entry["shape"])
    return out


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _gelu(x: np.ndarray) -> np.ndarray:
    """GELU with the error function, as torch's default."""
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


def _erf(x: np.ndarray) -> np.ndarray:
    """The error function to within 1.5e-7 (Abramowitz and Stegun 7.1.26; numpy has none of its own)."""
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    return np.sign(x) * (1.0 - poly * np.exp(-a * a))
