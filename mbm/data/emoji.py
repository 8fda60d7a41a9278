"""Emoji concepts: fetch the packages, read their names in 28 languages, render them in three art styles.

`prepare(cache)` is what `python -m mbm prepare-data` runs. It fetches four pinned packages with the ordinary
clients (`npm pack`, `apt-get download`) into `cache/emoji/downloads`, checks each against its sha256 in
`SOURCES`, and writes `cache/emoji/emoji-{size}.npz`: one RGBA array per art style (`noto`, `twemoji`,
`fluent`) over the same concepts, plus `concepts.json` with every concept's group and, per locale, its label
and tags. A concept is an emojibase entry (skin-tone variants folded into their base) drawn in every style.
Licences: emojibase-data MIT, Twemoji graphics CC-BY 4.0, Fluent Emoji MIT, Noto Color Emoji OFL 1.1.
OpenMoji (CC-BY-SA) is deliberately not used.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

log = logging.getLogger(__name__)
STYLES = ("noto", "twemoji", "fluent")
LOCALES = ("bn", "da", "de", "en", "en-gb", "es", "es-mx", "et", "fi", "fr", "hi", "hu", "it", "ja", "ko", "lt",
           "ms", "nb", "nl", "pl", "pt", "ru", "sv", "th", "uk", "vi", "zh", "zh-hant")
GROUPS = ("smileys-emotion", "people-body", "component", "animals-nature", "food-drink", "travel-places",
          "activities", "objects", "symbols", "flags")  # emojibase's group numbers index this
NOTO_PX = 109  # the one size Noto Color Emoji's bitmaps come in
NOTO_TTF = "usr/share/fonts/truetype/noto/NotoColorEmoji.ttf"
NOTO_EMOJI_VERSION = 15.0  # Noto 2.042 stops here; newer sequences fall back to their base glyph (wrong pictures)


@dataclass(frozen=True)
class Source:
    client: str  # "npm" (npm pack) or "apt" (apt-get download)
    spec: str  # what the client is asked for, version pinned
    file: str  # the file it writes
    sha256: str  # checked after every fetch and before every use


SOURCES = {
    "emojibase": Source("npm", "emojibase-data@17.0.0", "emojibase-data-17.0.0.tgz",
                        "d01d0e2ca4e22cb402679532155342c71e2e871f25c32223c013b8b166ebdf5a"),
    "twemoji": Source("npm", "emoji-datasource-twitter@16.0.0", "emoji-datasource-twitter-16.0.0.tgz",
                      "f64a530c63bca463bd8317fdc4615ce63a53a0c65018e4ce2d848aaba7a28877"),
    "fluent": Source("npm", "@iconify-json/fluent-emoji-flat@1.2.6", "iconify-json-fluent-emoji-flat-1.2.6.tgz",
                     "7d064769dee690815f823bc5bcc511d957198caf9f5edd8dd9c1aa48a6aeb175"),
    "noto": Source("apt", "fonts-noto-color-emoji=2.042-0+deb12u1", "fonts-noto-color-emoji_2.042-0+deb12u1_all.deb",
                   "a5ab0f69c7938423862320d9aca5dd187b3fd879d6a9a57dd52e17c3fa8d2751"),
}


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch(downloads: Path, sources: dict[str, Source] = SOURCES) -> dict[str, Path]:
    """Fetch every source into `downloads` (kept if already there with the right hash); returns name -> file.

    Raises:
        ValueError: a file's sha256 is not the pinned one (a changed or damaged package).
    """
    downloads.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, src in sources.items():
        path = downloads / src.file
        if not path.is_file():
            cmd = ["npm", "pack", "--silent", src.spec] if src.client == "npm" else ["apt-get", "download", src.spec]
            log.info("fetching %s: %s", name, " ".join(cmd))
            subprocess.run(cmd, cwd=downloads, check=True, stdout=subprocess.DEVNULL)
        got = sha256(path)
        if got != src.sha256:
            raise ValueError(f"{path} has sha256 {got}, expected {src.sha256}; delete it and fetch again")
        out[name] = path
    return out


def _norm(hexcode: str) -> str:
    """'1F636-200D-1F32B-FE0F' -> '1F636-200D-1F32B': the packages disagree on variation selectors."""
    return "-".join(p for p in hexcode.upper().split("-") if p != "FE0F")


def _tar_json(tar: tarfile.TarFile, member: str):
    return json.load(tar.extractfile(member))


def read_names(emojibase: Path, locales: tuple[str, ...] = LOCALES) -> dict[str, dict]:
    """Base emoji (no components, no skin tones) -> {"emoji", "group", "version", "names": {locale: [label, *tags]}}."""
    concepts: dict[str, dict] = {}
    with tarfile.open(emojibase) as tar:
        for locale in locales:
            for e in _tar_json(tar, f"package/{locale}/data.json"):
                if e.get("group") in (None, 2):  # components (skin tones, hair) are not concepts
                    continue
                key = _norm(e["hexcode"])
                c = concepts.setdefault(key, {"emoji": e["emoji"], "group": GROUPS[e["group"]],
                                              "version": e.get("version", 0), "names": {}})
                c["names"][locale] = [e["label"], *e.get("tags", [])]
    return concepts


def twemoji_images(tarball: Path) -> dict[str, Image.Image]:
    """Normalised hexcode -> 64 px RGBA image, for every Twemoji PNG in emoji-datasource-twitter."""
    out = {}
    prefix = "package/img/twitter/64/"
    with tarfile.open(tarball) as tar:
        for m in tar:
            if m.name.startswith(prefix) and m.name.endswith(".png"):
                out[_norm(m.name[len(prefix):-4])] = Image.open(io.BytesIO(tar.extractfile(m).read())).convert("RGBA")
    return out


def fluent_svgs(tarball: Path) -> dict[str, str]:
    """Normalised hexcode -> a standalone SVG document, from @iconify-json/fluent-emoji-flat."""
    with tarfile.open(tarball) as tar:
        icons, chars = _tar_json(tar, "package/icons.json"), _tar_json(tar, "package/chars.json")
    w, h = icons.get("width", 32), icons.get("height", 32)
    out = {}
    for hexcode, name in chars.items():
        icon = icons["icons"].get(name)
        if icon:
            out[_norm(hexcode)] = (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {icon.get("width", w)} '
                                   f'{icon.get("height", h)}">{icon["body"]}</svg>')
    return out


def render_svg(svg: str, size: int) -> Image.Image:
    try:
        import cairosvg
    except ImportError as e:
        raise ImportError("rendering Fluent Emoji needs cairosvg: pip install cairosvg") from e
    png = cairosvg.svg2png(bytestring=svg.encode(), output_width=size, output_height=size)
    return Image.open(io.BytesIO(png)).convert("RGBA")


def noto_font(deb_or_ttf: Path, cache: Path) -> Path:
    """The font file: given directly, or extracted from the Debian package into `cache` (dpkg-deb -x)."""
    if deb_or_ttf.suffix == ".ttf":
        return deb_or_ttf
    ttf = cache / "noto" / NOTO_TTF
    if not ttf.is_file():
        subprocess.run(["dpkg-deb", "-x", str(deb_or_ttf), str(cache / "noto")], check=True)
    return ttf


class NotoRenderer:
    """Pillow draws Noto's colour bitmaps at 109 px only; a sequence the font lacks draws as a missing glyph."""

    def __init__(self, ttf: Path):
        self.font = ImageFont.truetype(str(ttf), NOTO_PX)
        self.missing = self._draw("\U000F0000")  # a private-use code point: the font's missing-glyph picture

    def _draw(self, text: str) -> np.ndarray | None:
        left, top, right, bottom = self.font.getbbox(text)
        if right - left > 1.5 * NOTO_PX * 1.25:  # a sequence not joined into one glyph
            return None
        img = Image.new("RGBA", (right, bottom), (0, 0, 0, 0))
        ImageDraw.Draw(img).text((0, 0), text, font=self.font, embedded_color=True)
        return np.asarray(img)

    def __call__(self, text: str) -> Image.Image | None:
        arr = self._draw(text)
        if arr is None or arr[..., 3].max() == 0 or (arr.shape == self.missing.shape and (arr == self.missing).all()):
            return None
        return Image.fromarray(arr, "RGBA")


def fit(img: Image.Image, size: int) -> np.ndarray:
    """`(size, size, 4)` uint8: the image's content box scaled to fill the square, centred, aspect kept."""
    box = img.getbbox() or (0, 0, *img.size)
    img = img.crop(box)
    scale = size / max(img.size)
    w, h = max(1, round(img.width * scale)), max(1, round(img.height * scale))
    img = img.resize((w, h), Image.Resampling.LANCZOS)
    out = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    out.paste(img, ((size - w) // 2, (size - h) // 2))
    return np.asarray(out)


def build(files: dict[str, Path], cache: Path, size: int = 64, styles: tuple[str, ...] = STYLES,
          locales: tuple[str, ...] = LOCALES) -> tuple[dict[str, np.ndarray], list[dict]]:
    """Render every concept present in all `styles`; returns ({style: (N, size, size, 4) uint8}, concepts)."""
    names = read_names(files["emojibase"], locales)
    drawers = {}
    if "twemoji" in styles:
        tw = twemoji_images(files["twemoji"])
        drawers["twemoji"] = lambda key, c: tw.get(key)
    if "fluent" in styles:
        fl = fluent_svgs(files["fluent"])
        drawers["fluent"] = lambda key, c: render_svg(fl[key], 2 * size) if key in fl else None
    if "noto" in styles:
        noto = NotoRenderer(noto_font(files["noto"], cache))
        drawers["noto"] = lambda key, c: noto(c["emoji"])
    arrays: dict[str, list] = {s: [] for s in styles}
    concepts = []
    for key, c in names.items():
        if any(loc not in c["names"] for loc in locales):
            continue
        if "noto" in styles and c["version"] > NOTO_EMOJI_VERSION:
            continue
        imgs = {s: drawers[s](key, c) for s in styles}
        if any(v is None for v in imgs.values()):
            continue
        for s in styles:
            arrays[s].append(fit(imgs[s], size))
        concepts.append({"hexcode": key, **c})
    log.info("%d of %d concepts drawn in every style of %s", len(concepts), len(names), styles)
    return {s: np.stack(v) if v else np.zeros((0, size, size, 4), np.uint8) for s, v in arrays.items()}, concepts


def prepare(cache: Path, size: int = 64, sources: dict[str, Source] = SOURCES,
            locales: tuple[str, ...] = LOCALES) -> Path:
    """Fetch, check and render; writes `cache/emoji/emoji-{size}.npz` and `concepts.json`, returns the npz path.
    The styles are those of `sources` (a table without `noto` renders the other two)."""
    root = cache / "emoji"
    files = fetch(root / "downloads", sources)
    arrays, concepts = build(files, root, size, tuple(s for s in STYLES if s in files), locales)
    (root / "concepts.json").write_text(json.dumps(concepts, ensure_ascii=False) + "\n")
    out = root / f"emoji-{size}.npz"
    np.savez(out, **arrays)
    return out


def load(cache: Path, size: int = 64) -> tuple[dict[str, np.ndarray], list[dict]]:
    """What `prepare` wrote: ({style: (N, size, size, 4) uint8 RGBA}, concepts in the same order)."""
    root = cache / "emoji"
    path = root / f"emoji-{size}.npz"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run `python -m mbm prepare-data --size {size}` first")
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    return arrays, json.loads((root / "concepts.json").read_text())
