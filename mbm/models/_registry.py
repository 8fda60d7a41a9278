"""The table of models mbm knows by name, and how a spec string is told apart.

A spec is one of:
- `mbm-shapes`: the embedded model, weights shipped in `assets/mbm-shapes/`, works offline; likewise
  `mbm-world` (widened shapes + emoji concepts in 28 languages) where `assets/mbm-world/` holds its weights;
- `ARCH:TAG`: any open_clip architecture with one of its pretrained tags (weights from the
  Hugging Face cache or hub), or `ARCH:/path/to/weights` for a local checkpoint of that architecture;
- a local path: a folder holding `open_clip_config.json` and weights (open_clip's own layout),
  or a weights file with `open_clip_config.json` beside it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

ASSETS = Path(__file__).resolve().parents[2] / "assets"
EMBEDDED = "mbm-shapes"
WORLD = "mbm-world"  # the embedded model of the widened world, loadable by name once its weights ship
SPACE_MODEL = "ViT-B-32:laion2b_s34b_b79k"  # the default on a Hugging Face Space, where the hub is reachable


@dataclass(frozen=True)
class ModelInfo:
    spec: str  # what create_model takes
    about: str  # one line for people choosing a model
    offline: bool  # True if it needs no download


def _shipped(name: str) -> bool:
    return (ASSETS / name / "open_clip_config.json").is_file()


# A few well-known models for the model picker; any other open_clip ARCH:TAG works too.
KNOWN_MODELS = (
    ModelInfo(EMBEDDED, "embedded 128-d CLIP trained on the synthetic shapes world (ships with mbm)", True),
    *([ModelInfo(WORLD, "embedded CLIP: shapes on any background, drawings, 1,570 emoji concepts in 28 languages",
                 True)] if _shipped(WORLD) else []),
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


def classify_spec(spec: str) -> str:
    """'embedded', 'path', 'open_clip' or 'unknown' for a spec string (no I/O beyond a stat)."""
    if spec == EMBEDDED or (spec == WORLD and _shipped(WORLD)):
        return "embedded"
    if not spec.strip():
        return "unknown"
    if Path(spec).expanduser().exists():
        return "path"
    arch, sep, tag = spec.partition(":")
    if sep and arch and tag:
        return "open_clip"
    return "unknown"
