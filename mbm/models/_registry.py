"""The table of models mbm knows by name, how a spec string becomes a `Spec` (once), and the loaders by scheme.

A spec is one of (the scheme prefix may be left out where the form says which it is):
- `mbm:NAME` or `NAME`: an embedded model whose weights ship in `assets/NAME/`, working offline: `mbm-world` (the
  default: shapes anywhere, drawings, emoji concepts in 28 languages) and `mbm-shapes` (the shapes world only);
- `open_clip:ARCH:TAG` or `ARCH:TAG`: an open_clip architecture with one of its pretrained tags (weights from the
  Hugging Face cache or hub);
- `hf-hub:ORG/REPO`: a model on the Hugging Face hub in open_clip's layout (config and weights);
- `checkpoint:ARCH:/path/to/weights` or `ARCH:/path/to/weights`: a local checkpoint of a known architecture;
- `local-dir:PATH` or a path: a folder holding `open_clip_config.json` and weights (open_clip's own layout), or a
  weights file with `open_clip_config.json` beside it.
Loaders register themselves by scheme (`@register("open_clip")`, as timm registers its models).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ASSETS = Path(__file__).resolve().parents[2] / "assets"
WORLD = "mbm-world"  # the embedded model of the widened world
SHAPES = "mbm-shapes"  # the first embedded model: the synthetic shapes world only; loadable by name
EMBEDDED = WORLD  # the default
SPACE_MODEL = "ViT-B-32:laion2b_s34b_b79k"  # the default on a Hugging Face Space, where the hub is reachable


@dataclass(frozen=True)
class ModelInfo:
    spec: str  # what create_model takes
    about: str  # one line for people choosing a model
    offline: bool  # True if it needs no download


# A few well-known models for the model picker; any other open_clip ARCH:TAG works too.
KNOWN_MODELS = (
    ModelInfo(WORLD, "embedded CLIP: shapes on any background, drawings, 1,570 emoji concepts in 28 languages "
              "(ships with mbm)", True),
    ModelInfo(SHAPES, "embedded 128-d CLIP trained on the synthetic shapes world only (ships with mbm)", True),
    ModelInfo("ViT-B-32:laion2b_s34b_b79k", "OpenCLIP ViT-B/32 trained on LAION-2B (~600 MB)", False),
    ModelInfo("ViT-B-16:laion2b_s34b_b88k", "OpenCLIP ViT-B/16 trained on LAION-2B (~600 MB, slower, better)", False),
    ModelInfo("MobileCLIP-S1:datacompdr", "Apple MobileCLIP-S1, fast on CPUs (~350 MB)", False),
    ModelInfo("RN50:openai", "OpenAI's original ResNet-50 CLIP (~400 MB)", False),
)


def list_models() -> list[str]:
    """The specs of the models mbm knows by name (any open_clip `ARCH:TAG` is accepted too)."""
    return [m.spec for m in KNOWN_MODELS]


def embedded_dir(name: str = EMBEDDED) -> Path:
    """The folder of an embedded model's weights under `assets/`."""
    return ASSETS / name


@dataclass(frozen=True)
class Spec:
    """A model spec parsed once: its scheme and what the scheme's loader needs."""
    text: str  # as given; also the model's name in pages and stores
    scheme: str  # "mbm" | "open_clip" | "hf-hub" | "checkpoint" | "local-dir"
    name: str  # the embedded model, the architecture, the hub repo, or the path
    tag: str = ""  # the pretrained tag, or a checkpoint's file


SCHEMES = ("mbm", "open_clip", "hf-hub", "checkpoint", "local-dir")


def parse_spec(text: str) -> Spec | None:
    """The `Spec` of a spec string, or None when it is none of the forms above (no I/O beyond one stat)."""
    scheme, sep, rest = text.partition(":")
    if sep and scheme in SCHEMES:
        return _explicit(text, scheme, rest)
    if text in EMBEDDED_NAMES:
        return Spec(text, "mbm", text)
    if not text.strip():
        return None
    if Path(text).expanduser().exists():
        return Spec(text, "local-dir", str(Path(text).expanduser()))
    arch, sep, tag = text.partition(":")
    if not (sep and arch and tag):
        return None
    return Spec(text, "checkpoint" if Path(tag).expanduser().is_file() else "open_clip", arch, tag)


def _explicit(text: str, scheme: str, rest: str) -> Spec | None:
    if scheme in ("open_clip", "checkpoint"):
        arch, _, tag = rest.partition(":")
        return Spec(text, scheme, arch, tag) if arch and tag else None
    return Spec(text, scheme, rest) if rest else None


EMBEDDED_NAMES = (WORLD, SHAPES)
_LOADERS: dict[str, Callable] = {}


def register(scheme: str) -> Callable:
    """`@register("open_clip")` makes the function the loader of that scheme: `(Spec, torch.device) -> (model,
    preprocess, tokenizer)`."""
    def add(loader: Callable) -> Callable:
        _LOADERS[scheme] = loader
        return loader
    return add


def loader(scheme: str) -> Callable:
    return _LOADERS[scheme]


def classify_spec(spec: str) -> str:
    """'embedded', 'path', 'open_clip' or 'unknown' for a spec string, in the words of the model picker."""
    parsed = parse_spec(spec)
    kind = parsed.scheme if parsed else "unknown"
    return {"mbm": "embedded", "local-dir": "path"}.get(kind, "unknown" if kind == "unknown" else "open_clip")
