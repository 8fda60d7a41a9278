"""Fused image+text classifiers over a frozen CLIP backbone: the seed's model, with its fusion choices.

Branches (the seed's per-modality features), all from a frozen image-text encoder plus the pixels:
- image: the encoder's pooled image embedding `(D,)` and its token grid `(T, C)` (ResNet layer 3);
- text: the encoder's embedding of the question `(D,)`;
- colour: the image's colour channels at 6 x 6 `(108,)` through a small MLP (the seed's colour branch).
Each is projected to a shared width `d`. Fusion strategies, by name (`STRATEGIES`):
- `concat`: `H = Concat([H_I, H_W, H_C])`, then a hidden ReLU layer and `Y = Linear(H)`;
- `gated`: the question's features gate each image/colour feature (`H_I * sigmoid(W H_W)`), then concat;
- `attention`: the question attends over the image tokens and colour cells, then concat with the question;
- `image-only`, `text-only`: baselines that see one modality.
Why a hidden layer: with `Y = Linear(Concat(...))` alone the logits are a sum of an image-only and a
question-only term, which cannot express "the answer depends on the image *given* the question".
`FusedHeads` serves them (and SeedNet) for a model: answers that say when a question lies outside what the heads
were trained on or the best answer is a guess, and the shipped heads for a model that has none of its own.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from mbm.data.shapes import render
from mbm.data.vqa import ANSWERS, WORDS, Example, tokenize
from mbm.errors import InputError
from mbm.models import ASSETS, Encoder
from mbm.text import clean_text

log = logging.getLogger(__name__)
STRATEGIES = ("concat", "gated", "attention", "image-only", "text-only")
COLOUR_GRID = 6  # the colour branch sees the image at COLOUR_GRID x COLOUR_GRID pixels


@dataclass
class Features:
    """Frozen-backbone features of a batch of (image, question) pairs, all float32 tensors."""
    image: torch.Tensor  # (B, D) pooled image embedding
    tokens: torch.Tensor  # (B, T, C) image token grid
    colour: torch.Tensor  # (B, 3 * COLOUR_GRID**2) colour channels at low resolution, in [0, 1]
    text: torch.Tensor  # (B, D) question embedding
    words: torch.Tensor  # (B, MAX_WORDS) long: the question's word ids (mbm.data.vqa.tokenize)

    def __getitem__(self, idx) -> Features:
        return Features(self.image[idx], self.tokens[idx], self.colour[idx], self.text[idx], self.words[idx])

    def __len__(self) -> int:
        return len(self.image)


def colour_cells(images: list[Image.Image]) -> np.ndarray:
    """`(B, 3 * COLOUR_GRID**2)` float32: each image's mean colour per cell of a COLOUR_GRID grid."""
    small = [np.asarray(im.convert("RGB").resize((COLOUR_GRID,) * 2, Image.Resampling.BOX), np.float32)
             for im in images]
    return np.stack(small).reshape(len(images), -1) / 255.0


def image_features(encoder: Encoder, images: list[Image.Image]) -> tuple[torch.Tensor, torch.Tensor]:
    """Pooled embeddings `(B, D)` and layer-3 token grids `(B, T, C)` from one pass of a ResNet image tower."""
    visual = encoder.model.visual
    if not hasattr(visual, "layer3"):
        raise ValueError(f"{encoder.name} has no ResNet image tower; the fusion heads need a ResNet CLIP "
                         "(train them with `python -m mbm train-fusion` on such a model)")
    grid = {}
    hook = visual.layer3.register_forward_hook(lambda m, i, o: grid.setdefault("x", o))
    try:
        x = torch.stack([encoder.prepare(im) for im in images]).to(encoder.device)  # (B, 3, H, W)
        with torch.inference_mode():
            pooled = F.normalize(encoder.model.encode_image(x).float(), dim=-1)  # (B, D)
    finally:
        hook.remove()
    tokens = grid["x"].float().flatten(2).transpose(1, 2)  # (B, C, h, w) -> (B, T, C)
    return pooled.cpu(), tokens.cpu()


def featurize(encoder: Encoder, images: list[Image.Image], questions: list[str]) -> Features:
    """Features of (image, question) pairs; images may repeat (each is encoded once per call)."""
    unique = {id(im): im for im in images}
    order = {k: i for i, k in enumerate(unique)}
    pooled, tokens = image_features(encoder, list(unique.values()))
    colour = torch.from_numpy(colour_cells(list(unique.values())))
    rows = torch.tensor([order[id(im)] for im in images])
    texts = sorted(set(questions))
    t = torch.from_numpy(encoder.encode_texts(texts))  # (Q, D)
    where = {text: i for i, text in enumerate(texts)}
    q = torch.tensor([where[s] for s in questions])
    words = torch.tensor([tokenize(s) for s in questions], dtype=torch.long)
    return Features(pooled[rows], tokens[rows], colour[rows], t[q], words)


def featurize_examples(encoder: Encoder, examples: list[Example], image_size: int = 64,
                       batch_scenes: int = 256) -> Features:
    """Features of Shapes-VQA examples in the order of `ordered(examples)`, rendering each scene once."""
    groups = list(_by_scene(examples).values())
    parts = []
    for start in range(0, len(groups), batch_scenes):
        pairs = [(render(group[0].scene, size=image_size), group) for group in groups[start:start + batch_scenes]]
        images = [image for image, group in pairs for _ in group]
        parts.append(featurize(encoder, images, [ex.question for _, group in pairs for ex in group]))
    return Features(*(torch.cat([getattr(p, f.name) for p in parts]) for f in fields(Features)))


def ordered(examples: list[Example]) -> list[Example]:
    """Examples grouped by scene in first-seen order: the order `featurize_examples` returns features in."""
    return [ex for group in _by_scene(examples).values() for ex in group]


def _by_scene(examples: list[Example]) -> dict[tuple[str, int], list[Example]]:
    groups: dict[tuple[str, int], list[Example]] = {}
    for ex in examples:
        groups.setdefault((ex.split, ex.index), []).append(ex)
    return groups


@dataclass
class HeadConfig:
    strategy: str = "concat"  # one of STRATEGIES
    embed_dim: int = 128  # D of the backbone's embeddings
    token_dim: int = 256  # C of the backbone's token grid
    d: int = 128  # the shared width every branch is projected to
    hidden: int = 256  # the layer between the fusion and the linear head
    dropout: float = 0.1


class FusionClassifier(nn.Module):
    """Branches -> projections to `d` -> a fusion strategy -> hidden ReLU layer -> `Linear` over ANSWERS."""

    def __init__(self, cfg: HeadConfig):
        super().__init__()
        if cfg.strategy not in STRATEGIES:
            raise InputError(f"unknown fusion strategy {cfg.strategy!r}; choose from {STRATEGIES}")
        self.cfg, d, s = cfg, cfg.d, cfg.strategy
        if s != "text-only":  # only the modules a strategy uses exist, so parameter counts are honest
            self.image = nn.Sequential(nn.Linear(cfg.embed_dim, d), nn.GELU())
            self.colour = nn.Sequential(nn.Linear(3 * COLOUR_GRID**2, d), nn.GELU(), nn.Linear(d, d), nn.GELU())
        if s != "image-only":
            self.text = nn.Sequential(nn.Linear(cfg.embed_dim, d), nn.GELU())
            self.words = nn.EmbeddingBag(len(WORDS), d, mode="mean", padding_idx=0)  # learned question words
        if s == "gated":
            self.gate = nn.Linear(d, 2 * d)
        if s == "attention":
            self.tokens = nn.Linear(cfg.token_dim, d)
            self.cells = nn.Linear(3, d)  # one colour cell as a token
            self.cell_pos = nn.Parameter(torch.zeros(COLOUR_GRID**2, d))
            self.query = nn.Linear(d, d)
        width = {"concat": 3, "gated": 3, "attention": 2, "image-only": 2, "text-only": 1}[s] * d
        self.head = nn.Sequential(nn.Dropout(cfg.dropout), nn.Linear(width, cfg.hidden), nn.ReLU(),
                                  nn.Linear(cfg.hidden, len(ANSWERS)))

    def forward(self, f: Features) -> torch.Tensor:
        """Logits `(B, len(ANSWERS))`."""
        s = self.cfg.strategy
        if s == "text-only":
            return self.head(self._question(f))
        h_i, h_c = self.image(f.image), self.colour(f.colour)  # (B, d) each
        if s == "image-only":
            return self.head(torch.cat([h_i, h_c], dim=-1))
        h_w = self._question(f)
        if s == "concat":
            h = torch.cat([h_i, h_w, h_c], dim=-1)  # (B, 3d): the seed's H
        elif s == "gated":
            g_i, g_c = torch.sigmoid(self.gate(h_w)).chunk(2, dim=-1)  # (B, d) each, set by the question
            h = torch.cat([h_i * g_i, h_w, h_c * g_c], dim=-1)
        else:
            h = torch.cat([self._attend(f, h_w), h_w], dim=-1)  # (B, 2d)
        return self.head(h)

    def _question(self, f: Features) -> torch.Tensor:
        return self.text(f.text) + self.words(f.words)  # (B, d): frozen sentence embedding + learned words

    def _attend(self, f: Features, h_w: torch.Tensor) -> torch.Tensor:
        cells = f.colour.view(len(f), 3, COLOUR_GRID**2).transpose(1, 2)  # (B, 36, 3)
        keys = torch.cat([self.tokens(f.tokens), self.cells(cells) + self.cell_pos], dim=1)  # (B, T + 36, d)
        q = self.query(h_w).unsqueeze(1)  # (B, 1, d)
        return F.scaled_dot_product_attention(q, keys, keys).squeeze(1)  # (B, d)


def save_heads(heads: dict[str, FusionClassifier], folder: Path, backbone: str, extra: dict) -> Path:
    """`folder/<strategy>.safetensors` per head and `folder/heads.json` with configs, backbone and metrics."""
    from safetensors.torch import save_file
    folder.mkdir(parents=True, exist_ok=True)
    for name, model in heads.items():
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, folder / f"{name}.safetensors")
    meta = {"backbone": backbone, "answers": list(ANSWERS), "created": time.strftime("%Y-%m-%d"),
            "heads": {name: asdict(m.cfg) for name, m in heads.items()}, **extra}
    (folder / "heads.json").write_text(json.dumps(meta, indent=2))
    return folder / "heads.json"


def load_heads(folder: Path) -> tuple[dict[str, FusionClassifier], dict]:
    """The heads saved by `save_heads` (safetensors only) and their metadata."""
    from safetensors.torch import load_file

    from mbm.models._weights import reading_weights
    meta = json.loads((folder / "heads.json").read_text())
    if meta["answers"] != list(ANSWERS):
        raise ValueError(f"{folder}: the heads were trained for another answer vocabulary; retrain them")
    heads = {}
    for name, cfg in meta["heads"].items():
        model = FusionClassifier(HeadConfig(**cfg))
        with reading_weights(folder / f"{name}.safetensors"):
            model.load_state_dict(load_file(folder / f"{name}.safetensors"))
        heads[name] = model.eval()
    return heads, meta


FUSION_HEADS = ASSETS / "fusion"  # FUSION_HEADS / <backbone spec> holds the heads `train-fusion` wrote
SHIPPED_BACKBONE = "mbm-shapes"  # the heads that ship; they answer for any model that has none of its own
MAX_QUESTION_CHARS = 300
CONFIDENT = 0.5  # a best answer below this probability is shown as a guess


@dataclass(frozen=True)
class OutOfScope:
    """Why a question lies outside what the heads were trained on."""
    words: tuple[str, ...]  # the question's words no training question holds; () when only its form is new
    sentence: str  # for people


class FusedAnswers(dict):
    """`{strategy: {answer: probability}}` (best first), and what a person should know before trusting it."""

    def __init__(self, probs: dict[str, dict[str, float]], out_of_scope: OutOfScope | None, backbone: str):
        super().__init__(probs)
        self.out_of_scope = out_of_scope  # None when the question is one Shapes-VQA asks
        self.backbone = backbone  # the model whose features the heads read

    def unsure(self, strategy: str) -> bool:
        """True if that strategy's best answer is a guess (probability below `CONFIDENT`)."""
        return next(iter(self[strategy].values())) < CONFIDENT

    def note(self, strategy: str) -> str:
        """One sentence on how far to trust `strategy`'s answer; "" when it is confident and in scope."""
        if self.out_of_scope:
            return self.out_of_scope.sentence
        answer, p = next(iter(self[strategy].items()))
        return f"unsure: the best answer, “{answer}”, has only {p:.0%}" if p < CONFIDENT else ""


def out_of_scope(question: str) -> OutOfScope | None:
    """None if `question` is one of the questions Shapes-VQA asks; else which words (or form) the heads never saw."""
    from mbm.data.vqa import is_asked, unknown_words
    if is_asked(question):
        return None
    words = tuple(unknown_words(question))
    known = ('they answer only questions like “what colour is the star?”, “what shape is at the top left?”, '
             '“how many shapes are there?” and “is there a red circle?”')
    if words:
        quoted = ", ".join(f"“{w}”" for w in words[:5]) + (", …" if len(words) > 5 else "")
        return OutOfScope(words, f"outside what the heads were trained on: they never saw the words {quoted}; {known}")
    return OutOfScope((), f"outside what the heads were trained on: they know these words but were never asked "
                          f"a question of this form; {known}")


class FusedHeads:
    """Every fused classifier that can answer a question about an image for one encoder: the heads trained over it,
    and the from-scratch SeedNet beside them (it needs no backbone). Load with `FusedHeads.load(encoder)`.

    A model with no heads of its own is answered by the shipped heads over `SHIPPED_BACKBONE`, which read their own
    backbone's features (loaded on first use); `encoder` stays the model served, `backbone` names the one read."""

    def __init__(self, encoder: Encoder, heads: dict[str, FusionClassifier], seednet: nn.Module | None = None,
                 backbone: str | None = None, backbone_key: str | None = None):
        self.encoder, self.heads, self.seednet = encoder, heads, seednet
        self.backbone = backbone or encoder.name  # the model the heads were trained over
        self._backbone_key = backbone_key or encoder.key
        self._features: Encoder | None = encoder if backbone is None else None
        self._lock = threading.Lock()

    @classmethod
    def load(cls, encoder: Encoder, folder: Path = FUSION_HEADS) -> FusedHeads:
        """The heads trained over `encoder`'s model, else the shipped ones over `SHIPPED_BACKBONE` (and SeedNet).

        Raises:
            InputError: no heads fit: none were trained for this model and the shipped ones are missing or were
                trained over other weights of it; the message says how to train them.
        """
        from mbm.train.seednet import load_seednet
        seednet = load_seednet(folder / "seednet") if (folder / "seednet" / "seednet.json").is_file() else None
        for name in (_folder_name(encoder.name), SHIPPED_BACKBONE):
            heads, meta = _read_heads(folder / name)
            if meta.get("backbone_key") == encoder.key:
                return cls(encoder, heads, seednet)
        if not heads or encoder.name == meta["backbone"]:  # the same model with other weights: its heads are stale
            raise InputError(f"no fused image+text heads are trained for {encoder.name}: run "
                             f"`python -m mbm train-fusion --backbone {encoder.name}` (minutes on a CPU)")
        log.info("no fused heads for %s; the heads over %s answer", encoder.name, meta["backbone"])
        return cls(encoder, heads, seednet, backbone=meta["backbone"], backbone_key=meta["backbone_key"])

    @property
    def strategies(self) -> list[str]:
        return [*self.heads, *(["seednet"] if self.seednet is not None else [])]

    @property
    def borrowed(self) -> bool:
        """True when the heads read another model's features than the one served (it has no heads of its own)."""
        return self.backbone != self.encoder.name

    def features_encoder(self) -> Encoder:
        """The encoder whose features the heads read: the served one, or their own backbone, loaded once."""
        with self._lock:
            if self._features is None:
                from mbm.models import create_model
                backbone = create_model(self.backbone, device="cpu")
                if backbone.key != self._backbone_key:
                    raise InputError(f"the fused heads were trained over other weights of {self.backbone}; "
                                     f"retrain them: `python -m mbm train-fusion --backbone {self.backbone}`")
                self._features = backbone
            return self._features

    def answers(self, image: Image.Image, question: str, strategies: tuple[str, ...] | None = None) -> FusedAnswers:
        """Every strategy's answer (by default) to one question about one image, so fusion can be compared with the
        baselines; the result also says whether the question lies outside what the heads were trained on.
        InputError for an empty or over-long question or an unknown strategy."""
        from mbm.data.vqa import normalise
        from mbm.train.seednet import answer_logits
        question = normalise(_checked(question))
        unknown = [s for s in strategies or () if s not in self.strategies]
        if unknown:
            raise InputError(f"unknown fusion strategy {unknown[0]!r}; choose from {self.strategies}")
        feats = featurize(self.features_encoder(), [image.convert("RGB")], [question])
        out = {}
        with torch.inference_mode():
            for name in strategies or self.strategies:
                logits = answer_logits(self.seednet, image, question) if name == "seednet" else \
                    self.heads[name](feats)[0]
                probs = torch.softmax(logits, dim=-1).tolist()
                out[name] = dict(sorted(zip(ANSWERS, probs), key=lambda kv: -kv[1]))
        return FusedAnswers(out, out_of_scope(question), self.backbone)


def _checked(question: str) -> str:
    question = clean_text(question or "").strip()
    if not question:
        raise InputError("type a question about the image, e.g. 'what shape is at the top left?'")
    if len(question) > MAX_QUESTION_CHARS:
        raise InputError(f"that question is {len(question):,} characters; keep it under {MAX_QUESTION_CHARS}")
    return question


def _folder_name(spec: str) -> str:
    return spec.replace(":", "-").replace("/", "-")


def _read_heads(folder: Path) -> tuple[dict[str, FusionClassifier], dict]:
    return load_heads(folder) if (folder / "heads.json").is_file() else ({}, {})
