"""The built-in sample gallery: synthetic scenes written as image files with caption sidecars.

`assets/gallery/scenes/` is made by `write_scenes` (`python -m mbm make-gallery`); it sits beside a
few real public-domain photos in `assets/gallery/photos/`. Teachers can make bigger or harder
galleries the same way (e.g. `--split heldout` for colour-shape pairs the model never saw).
"""

from __future__ import annotations

from pathlib import Path

from mbm.data.language import describe
from mbm.data.shapes import make_scene, render


def write_scenes(folder: str | Path, n: int = 300, size: int = 128, split: str = "test") -> list[Path]:
    """Render scenes `0..n-1` of `split` to `folder/scene-NNN.png`, each with its caption in `scene-NNN.txt`.

    Returns:
        The image paths written. Existing files of the same names are replaced; others are left alone.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        scene = make_scene(split, i)
        path = folder / f"scene-{i:03d}.png"
        render(scene, size=size).save(path, optimize=True)
        path.with_suffix(".txt").write_text(describe(scene) + "\n", encoding="utf-8")
        paths.append(path)
    return paths
