"""The built-in sample gallery: synthetic scenes and emoji written as image files with caption sidecars.

`assets/gallery/scenes/` is made by `write_scenes` (`python -m mbm make-gallery`), `assets/gallery/anywhere/` by
`write_scenes(..., anywhere=True)` (the same scenes on any background, any size, outlined or hand-drawn), and
`assets/gallery/emoji/` by `write_emoji` (`make-gallery --emoji twemoji`: concepts in the art style `mbm-world`
never saw in training). They sit beside a few real public-domain photos in `assets/gallery/photos/`. Teachers
can make bigger or harder galleries the same way (e.g. `--split heldout` for colour-shape pairs the model never
saw).
"""

from __future__ import annotations

import random
import re
import unicodedata
from pathlib import Path

from PIL import Image

from mbm.data.language import describe
from mbm.data.shapes import make_scene, render

GALLERY_GROUPS = ("animals-nature", "food-drink")  # every concept of these; a sample of the other groups


def write_scenes(folder: str | Path, n: int = 300, size: int = 128, split: str = "test",
                 anywhere: bool = False) -> list[Path]:
    """Render scenes `0..n-1` of `split` to `folder/scene-NNN.png`, each with its caption in `scene-NNN.txt`.

    Args:
        anywhere: widen each scene (`mbm.data.backgrounds.widen`): any background, size, rotation and drawing.
    Returns:
        The image paths written. Existing files of the same names are replaced; others are left alone.
    """
    from mbm.data import backgrounds
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    rng = random.Random(f"gallery/{split}")
    for i in range(n):
        scene = make_scene(split, i)
        path = folder / f"scene-{i:03d}.png"
        if anywhere:
            scene = backgrounds.widen(scene, rng)
            backgrounds.render(scene, size).save(path, optimize=True)
        else:
            render(scene, size=size).save(path, optimize=True)
        path.with_suffix(".txt").write_text(describe(scene) + "\n", encoding="utf-8")
        paths.append(path)
    return paths


def write_emoji(folder: str | Path, cache: Path, style: str = "twemoji", others: int = 100, size: int = 64,
                seed: str = "gallery") -> list[Path]:
    """Every emoji concept of `GALLERY_GROUPS` and `others` sampled from the other groups (flags and skin-tone
    components left out), drawn in `style` as `prepare-data` rendered it at `size` px (needs that first), on white
    with a margin, to `folder/<group>/<label>.png` with the English label in a `.txt` sidecar.

    Returns:
        The image paths written.
    """
    from mbm.data import emoji
    images, concepts = emoji.load(cache, size)
    if style not in images:
        raise ValueError(f"no {style!r} pictures in the cache; prepare-data rendered {sorted(images)}")
    main = [i for i, c in enumerate(concepts) if c["group"] in GALLERY_GROUPS]
    rest = [i for i, c in enumerate(concepts) if c["group"] not in (*GALLERY_GROUPS, "flags", "component")]
    picks = sorted(main + random.Random(seed).sample(rest, min(others, len(rest))))
    folder, paths, used = Path(folder), [], set()
    for i in picks:
        c = concepts[i]
        label = c["names"]["en"][0]
        name = _slug(label) or c["hexcode"].lower()
        name = name if (c["group"], name) not in used else f"{name}-{c['hexcode'].lower()}"
        used.add((c["group"], name))
        path = folder / c["group"] / f"{name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        side = round(size * 1.25)
        picture = Image.new("RGBA", (side, side), (255, 255, 255, 255))
        picture.alpha_composite(Image.fromarray(images[style][i], "RGBA"), ((side - size) // 2,) * 2)
        picture.convert("RGB").save(path, optimize=True)
        path.with_suffix(".txt").write_text(label + "\n", encoding="utf-8")
        paths.append(path)
    return paths


def _slug(label: str) -> str:
    """"piñata" -> "pinata", "woman’s hat" -> "woman-s-hat": a file name from a label."""
    ascii_ = unicodedata.normalize("NFKD", label).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", ascii_.lower()).strip("-")[:60]
