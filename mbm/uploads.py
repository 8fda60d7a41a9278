"""Visitors' uploads: loose files and .zip archives become image and video files in one private folder, safely.

`take_uploads` copies the images (and the `NAME.txt` caption beside an image) from uploaded files and zips into
a folder. Nothing lands outside it (absolute paths, drive letters, `..`, symbolic links), zip bombs are refused
from their declared sizes and cut off while streaming, every limit is checked before anything is read, names are
sanitised, nothing is overwritten, and each file appears whole or not at all (hidden temp name, then rename).
Hidden files (`.DS_Store`, `__MACOSX/`, `.mbm/`) are dropped silently; every other file not taken gets a reason
in plain words. Videos (`mbm.video.VIDEO_SUFFIXES`) are taken as images are, under the same limits and quota.
Nothing is decoded here: the gallery does that.

This module keeps the books of one batch (limits, quota, what was taken, where it went); judging a zip and its
members' names before anything is read lives in `mbm._zipsafe`.
"""

from __future__ import annotations

import itertools
import logging
import os
import stat
import tempfile
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields
from functools import partial
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from mbm._zipsafe import (
    DAMAGED,
    MAX_NAME,
    UNSAFE,
    Refused,
    clean_name,
    member_parts,
    member_problem,
    open_zip,
    plural,
    shown_name,
    size_words,
)
from mbm.data.images import IMAGE_SUFFIXES
from mbm.video import VIDEO_SUFFIXES

logger = logging.getLogger(__name__)

MAX_CAPTION_BYTES = 10 * 2**10  # a NAME.txt sidecar caption larger than this is skipped
_CHUNK = 2**20  # bytes copied at a time
_MEDIA = IMAGE_SUFFIXES | VIDEO_SUFFIXES
_KEPT_SUFFIXES = _MEDIA | {".txt"}


@dataclass(frozen=True)
class UploadLimits:
    """How much one upload batch may bring in; anything beyond is skipped with a reason."""

    max_files: int = 500  # images taken per upload batch (loose files and zip members together)
    max_file_bytes: int = 25 * 2**20  # bytes in one image, as declared and as actually read
    max_total_bytes: int = 400 * 2**20  # all bytes written for one batch, captions included
    max_zip_members: int = 5000  # entries listed in one zip; more and the zip is refused whole, unread
    max_zip_ratio: int = 200  # a member above this uncompressed/compressed ratio is a bomb and skipped

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"UploadLimits.{f.name} must be a positive int, got {value!r}")


@dataclass(frozen=True)
class Quota:
    """What one visitor's folder may hold across all their upload batches: checked while files are written, so an
    archive that unpacks past it stops there."""

    max_bytes: int = 1 * 2**30  # bytes of images and captions kept for one session
    max_files: int = 2000  # image and caption files kept for one session
    used_bytes: int = 0  # what the folder holds already
    used_files: int = 0

    def __post_init__(self) -> None:
        if self.max_bytes < 1 or self.max_files < 1:
            raise ValueError(f"a quota must allow at least one byte and one file, got {self!r}")


@dataclass
class Intake:
    """What one upload batch brought in."""

    added: list[Path] = field(default_factory=list)  # files written into dest: images and their captions
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (name as the person gave it, why not taken)
    already: list[str] = field(default_factory=list)  # names whose same bytes the folder holds under that name

    def summary(self) -> str:
        """One line for people, e.g. "3 images added with 1 caption, 1 already there, 2 skipped"."""
        images = sum(p.suffix.lower() in IMAGE_SUFFIXES for p in self.added)
        videos = sum(p.suffix.lower() in VIDEO_SUFFIXES for p in self.added)
        captions = len(self.added) - images - videos
        text = plural(images, "image") + (f" and {plural(videos, 'video')}" if videos else "") + " added" + (
            f" with {plural(captions, 'caption')}" if captions else "")
        there = f", {len(self.already)} already there" if self.already else ""
        return f"{text}{there}, {len(self.skipped)} skipped"


@dataclass
class _Item:
    """One file offered for the gallery, a loose upload or a zip member, not read yet."""

    shown: str  # the name as the person gave it, for `Intake.skipped`
    folder: tuple[str, ...]  # sub-folders under dest as given (unsanitised); () for loose uploads
    name: str  # the base name as given
    size: int  # declared bytes (a zip's word for it; enforced again while copying)
    open: Callable[[], BinaryIO]
    problem: str | None = None  # a reason to refuse it found while listing the zip (encrypted, bomb)
    caption: _Item | None = None  # the NAME.txt sidecar that came with this image

    @property
    def suffix(self) -> str:
        return PurePosixPath(self.name).suffix.lower()

    @property
    def key(self) -> tuple[tuple[str, ...], str]:
        """Images and captions pair up by folder and stem."""
        return self.folder, PurePosixPath(self.name).stem


class _Batch:
    """One `take_uploads` call: where files go, what was taken, and what is left of the limits."""

    def __init__(self, dest: Path, limits: UploadLimits, quota: Quota | None = None) -> None:
        self.dest, self.root, self.limits = dest, dest.resolve(), limits
        self.quota = quota or Quota(max_bytes=2**62, max_files=2**62)
        self.intake = Intake()
        self.images = self.bytes = 0
        self._stems: dict[Path, set[str]] = {}  # per folder: stems of images and captions there

    def skip(self, shown: str, reason: str) -> None:
        logger.debug("upload skipped %s: %s", shown, reason)
        self.intake.skipped.append((shown, reason))

    def offer(self, items: list[_Item], on_zip: Callable[[_Item], None]) -> None:
        """Take the images among `items` with their captions, hand zips to `on_zip`, skip the rest."""
        captions = {item.key: item for item in items if item.suffix == ".txt"}
        for item in items:
            if item.suffix in _MEDIA:
                item.caption = captions.pop(item.key, None)
        unpaired = {id(c) for c in captions.values()}
        for item in items:
            if item.suffix in _MEDIA:
                self.take(item)
            elif item.suffix == ".zip":
                on_zip(item)
            elif item.suffix != ".txt" or id(item) in unpaired:
                self.skip(item.shown, f"not an image ({item.suffix or 'no file extension'})")

    def take(self, image: _Item) -> None:
        """Copy one image, then its caption beside it under the image's final stem."""
        path = None
        if self.images >= self.limits.max_files:
            self.skip(image.shown, f"over the limit of {self.limits.max_files} images per upload")
        elif self.quota.used_files + len(self.intake.added) >= self.quota.max_files:
            self.skip(image.shown, f"your uploads hold {self.quota.max_files:,} files, the most one visitor may keep; "
                                   "close the page to start again")
        elif path := self._save(image, self.limits.max_file_bytes):
            self.images += 1
        if image.caption is not None and path is None and image.shown not in self.intake.already:
            self.skip(image.caption.shown, "the caption of an image that was not added")
        elif image.caption is not None and path is not None:
            self._save(image.caption, MAX_CAPTION_BYTES, path.with_suffix(".txt"))

    def _save(self, item: _Item, cap: int, target: Path | None = None) -> Path | None:
        """Write `item` into dest, or record why not; returns where it went."""
        try:
            if reason := self._refusal(item, cap):
                raise Refused(reason)
            if target is None and self._is_copy(item, target := self._target(item)):
                return None
            self._write(item, target, cap)
        except Refused as exc:
            self.skip(item.shown, str(exc))
            return None
        except OSError as exc:
            self.skip(item.shown, f"could not be copied ({exc.strerror or type(exc).__name__})")
            return None
        except DAMAGED:
            logger.debug("cannot unpack %s", item.shown, exc_info=True)
            self.skip(item.shown, "damaged in the zip: it cannot be unpacked")
            return None
        self.intake.added.append(target)
        return target

    def _refusal(self, item: _Item, cap: int) -> str | None:
        """Why `item` cannot be taken, judged from its listing before anything is read; None if it can."""
        if item.problem:
            return item.problem
        if item.size > cap:
            return f"{size_words(item.size)} is over the {size_words(cap)} limit"
        return self._over(item.size)

    def _over(self, n: int) -> str | None:
        """Why `n` more bytes cannot be written in this batch, or None."""
        if self.bytes + n > self.limits.max_total_bytes:
            return _over_total(self.limits)
        if self.quota.used_bytes + self.bytes + n > self.quota.max_bytes:
            return (f"over your {size_words(self.quota.max_bytes)} quota for uploads "
                    f"({size_words(max(self.quota.max_bytes - self.quota.used_bytes - self.bytes, 0))} left)")
        return None

    def _target(self, item: _Item) -> Path:
        """A free, sanitised path in dest whose stem no image or caption there uses yet."""
        folder = self.dest.joinpath(*(clean_name(part) for part in item.folder))
        if not folder.resolve().is_relative_to(self.root):  # a symlinked folder already in dest
            raise Refused(UNSAFE)
        folder.mkdir(parents=True, exist_ok=True)
        if folder not in self._stems:
            self._stems[folder] = {p.stem for p in folder.iterdir() if p.suffix.lower() in _KEPT_SUFFIXES}
        taken, stem = self._stems[folder], clean_name(PurePosixPath(item.name).stem)
        for n in itertools.count():
            tag = f"-{n}" if n else ""
            candidate = stem[: MAX_NAME - len(item.suffix) - len(tag)] + tag
            if candidate not in taken and not (folder / (candidate + item.suffix)).exists():
                taken.add(candidate)
                return folder / (candidate + item.suffix)
        raise AssertionError("unreachable")

    def _is_copy(self, item: _Item, target: Path) -> bool:
        """True (and noted in `already`, `target` given back) when the file under `item`'s own name holds its very
        bytes: uploading the same file twice must not make `photo-1.jpg` beside `photo.jpg`."""
        own = target.with_name(clean_name(PurePosixPath(item.name).stem)[: MAX_NAME - len(item.suffix)] + item.suffix)
        if own == target or not own.is_file() or own.stat().st_size != item.size:
            return False
        with own.open("rb") as kept, item.open() as new:
            while (chunk := kept.read(_CHUNK)) == new.read(_CHUNK):
                if not chunk:
                    self._stems[target.parent].discard(target.stem)
                    self.intake.already.append(item.shown)
                    return True
        return False

    def _write(self, item: _Item, target: Path, cap: int) -> None:
        """Stream `item` into `target` through a hidden temporary file, enforcing the limits on actual bytes."""
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        n = 0
        try:
            with os.fdopen(fd, "wb") as out, item.open() as src:
                while chunk := src.read(_CHUNK):
                    n += len(chunk)
                    if n > cap:
                        raise Refused(f"over the {size_words(cap)} limit once unpacked (the zip understated its size)")
                    if reason := self._over(n):
                        raise Refused(reason)
                    out.write(chunk)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self.bytes += n


def take_uploads(files: Iterable[str | os.PathLike] | str | os.PathLike | None, dest: str | os.PathLike,
                 limits: UploadLimits = UploadLimits(), quota: Quota | None = None) -> Intake:
    """Copy the images among uploaded files and zips into `dest`; never raises for bad files.

    Args:
        files: paths of the uploaded files, whose base names are the names the person gave them (Gradio's
            temporary paths); one path or None is accepted too.
        dest: the folder to fill; created when the first file is written. Existing files are never replaced.
        limits: the `UploadLimits` of one batch.
        quota: what the folder may hold in all, and what it holds already (default: no limit but `limits`).
    Returns:
        An `Intake`: the files written (images and their `.txt` captions) and `(name, reason)` for each file
        not taken, where a zip member's name is "ARCHIVE.zip: path/in/zip".
    """
    if files is None or isinstance(files, (str, os.PathLike)):
        files = [] if files is None else [files]
    paths = [Path(f) if isinstance(f, (str, os.PathLike)) else _not_a_path(f) for f in files]
    batch = _Batch(Path(dest), limits, quota)
    batch.offer(_loose_items(batch, paths), on_zip=partial(_take_zip, batch))
    logger.info("upload into %s: %s", dest, batch.intake.summary())
    return batch.intake


def _not_a_path(value: object) -> Path:
    raise TypeError(f"uploads must be file paths, got {type(value).__name__} {value!r:.80}")


def _loose_items(batch: _Batch, paths: list[Path]) -> list[_Item]:
    items = []
    for path in paths:
        if path.name.startswith("."):
            continue  # hidden: dropped silently, as in zips
        if not path.is_file():
            batch.skip(shown_name(path.name), "the uploaded file is missing")
            continue
        items.append(_Item(shown_name(path.name), (), path.name, path.stat().st_size, partial(open, path, "rb")))
    return items


def _take_zip(batch: _Batch, item: _Item) -> None:
    """Offer the members of an uploaded zip, or skip the zip whole with the reason."""
    try:
        with item.open() as f, open_zip(f, batch.limits.max_zip_members) as zf:
            nested = "a zip inside a zip is not opened"
            batch.offer(_zip_items(batch, zf, item.shown), on_zip=lambda inner: batch.skip(inner.shown, nested))
    except Refused as exc:
        batch.skip(item.shown, str(exc))
    except OSError as exc:
        batch.skip(item.shown, f"could not be read ({exc.strerror or type(exc).__name__})")


def _zip_items(batch: _Batch, zf: zipfile.ZipFile, zip_shown: str) -> list[_Item]:
    """The zip's regular files as items; unsafe paths and links are skipped, folders and hidden files dropped."""
    items = []
    for info in zf.infolist():
        shown = shown_name(f"{zip_shown}: {info.filename}")
        raw = info.filename.replace("\\", "/")  # Windows tools write backslashes
        parts = member_parts(raw)
        if parts is None:
            batch.skip(shown, UNSAFE)
        elif raw.endswith("/") or not parts or parts[0] == "__MACOSX" or any(p.startswith(".") for p in parts):
            continue
        elif stat.S_ISLNK(info.external_attr >> 16):
            batch.skip(shown, "a symbolic link in the zip is not followed")
        else:
            items.append(_Item(shown, parts[:-1], parts[-1], info.file_size, partial(zf.open, info),
                               problem=member_problem(info, batch.limits.max_zip_ratio)))
    return items


def _over_total(limits: UploadLimits) -> str:
    return f"over the {size_words(limits.max_total_bytes)} limit for one upload"


