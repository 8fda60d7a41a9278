"""The scope a trained model ships (`mbm.models.scope`): every token of the captions it trained on, and one
sentence about its world. `train-clip` writes it beside the weights; for a folder trained before, run
`python -c "from mbm.train.scope import write_for; write_for('assets/mbm-shapes')"`.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path

SHAPES_KNOWS = ("It learned a synthetic world of coloured shapes (10 colours, 8 shapes: circle, square, triangle, "
                "star, hexagon, cross, diamond, heart; their sizes and places), in English only.")


def shapes_captions(n_batches: int = 20, seed: int = 0) -> Iterator[str]:
    """Captions as `train-clip` draws them: 2,560 hold all 51 tokens its vocabulary has (so do 25,600)."""
    from mbm.train.clip import make_batch
    rng = random.Random(f"scope/{seed}")
    for _ in range(n_batches):
        yield from make_batch(rng, 128, 0.5)[1]


def world_captions(concepts: list[dict], phrases: bool = True) -> Iterator[str]:
    """The shapes' captions, and every name and tag of every emoji concept in every locale (and, with `phrases`,
    every English phrasing of its label)."""
    from mbm.data import world
    yield from shapes_captions()
    for c in concepts:
        for names in c["names"].values():
            yield from names
        label = c["names"]["en"][0]
        if phrases:
            yield from (world.phrased(p, label) for p in world.ENGLISH_PHRASES)


def world_knows(concepts: list[dict]) -> str:
    locales = len(concepts[0]["names"]) if concepts else 0
    return (f"It learned coloured shapes on any background, drawn or photographed, and {len(concepts):,} emoji "
            f"concepts (animals, food, objects, faces, places, symbols) named in {locales} languages.")


def write_for(folder: str | Path, world_cache: str | Path | None = None) -> Path:
    """Write `folder/scope.json` for a model trained by `train-clip` (`--world` when `world_cache` is given;
    read from its config otherwise)."""
    import open_clip

    from mbm.models.scope import write_scope
    folder = Path(folder)
    config = json.loads((folder / "open_clip_config.json").read_text())
    if not world_cache and config.get("mbm_train_cfg", {}).get("world"):
        from mbm.engine import EngineConfig
        world_cache = EngineConfig.from_env().cache_path()  # where prepare-data put the concepts
    tokenizer = open_clip.SimpleTokenizer(context_length=config["model_cfg"]["text_cfg"]["context_length"])
    phrases = config.get("mbm_train_cfg", {}).get("phrase_share", 0.5) > 0
    if world_cache:  # prepare-data's concepts, read once for both
        concepts = json.loads((Path(world_cache) / "emoji" / "concepts.json").read_text(encoding="utf-8"))
        texts, knows = world_captions(concepts, phrases), world_knows(concepts)
    else:
        texts, knows = shapes_captions(), SHAPES_KNOWS
    return write_scope(folder, knows, texts, tokenizer.encode)
