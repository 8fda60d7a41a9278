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

import os
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
    hub: str = ""  # open_clip's `hf_hub` entry for its weights (tests/test_models.py checks it against open_clip's)


# A few well-known models for the model picker; any other open_clip ARCH:TAG works too.
KNOWN_MODELS = (
    ModelInfo(WORLD, "embedded CLIP: shapes on any background, drawings, 1,570 emoji concepts in 28 languages "
              "(ships with mbm)", True),
    ModelInfo(SHAPES, "embedded 128-d CLIP trained on the synthetic shapes world only (ships with mbm)", True),
    ModelInfo("ViT-B-32:laion2b_s34b_b79k", "OpenCLIP ViT-B/32 trained on LAION-2B (~600 MB)", False,
              "laion/CLIP-ViT-B-32-laion2B-s34B-b79K/"),
    ModelInfo("ViT-B-16:laion2b_s34b_b88k", "OpenCLIP ViT-B/16 trained on LAION-2B (~600 MB, slower, better)", False,
              "laion/CLIP-ViT-B-16-laion2B-s34B-b88K/"),
    ModelInfo("MobileCLIP-S1:datacompdr", "Apple MobileCLIP-S1, fast on CPUs (~350 MB)", False,
              "apple/MobileCLIP-S1-OpenCLIP/"),
    ModelInfo("RN50:openai", "OpenAI's original ResNet-50 CLIP (~400 MB)", False,
              "timm/resnet50_clip.openai/"),
)


def default_cache_dir() -> Path:
    """mbm's cache folder when none is configured: ~/.cache/mbm, or mbm under $XDG_CACHE_HOME (the XDG convention)."""
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "mbm"


def cached_weights(hub: str, cache_dir: str | None = None) -> Path | None:
    """The cached weights file of an open_clip `hf_hub` entry ("org/name/" or "org/name/file"), or None (no network)."""
    from huggingface_hub import try_to_load_from_cache
    if not hub:
        return None
    repo_id, filename = os.path.split(hub)  # "org/name/" -> open_clip's default file names
    names = [filename] if filename else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
    found = (try_to_load_from_cache(repo_id, name, cache_dir=cache_dir) for name in names)
    return next((Path(f) for f in found if isinstance(f, str)), None)


def default_model(on_space: bool, cache_dir: str | None = None) -> str:
    """The model to serve when none is named: on a Hugging Face Space, `SPACE_MODEL` (it can download);
    elsewhere the first known open_clip model whose weights are cached, else the embedded model. No torch."""
    if on_space:
        return SPACE_MODEL
    return next((m.spec for m in KNOWN_MODELS if m.hub and cached_weights(m.hub, cache_dir)), EMBEDDED)


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
