"""Zips and names from strangers, judged before anything is read (the safety half of `mbm.uploads`).

A zip's entries are counted from its end record before its directory is parsed; a member's path is refused when
it could point outside the folder (absolute, a drive letter, `..`); an encrypted member or one compressed too well
to be an image is named from the listing. Names are sanitised before they become files and cleaned before they
are repeated back to a person, and sizes are put in words that never round a file over a limit down to it.
"""

from __future__ import annotations

import logging
import math
import os
import re
import struct
import unicodedata
import zipfile
import zlib
from typing import BinaryIO

try:
    from lzma import LZMAError
except ImportError:  # a Python without lzma cannot read LZMA zip members either
    LZMAError = zlib.error

logger = logging.getLogger(__name__)

_RATIO_FLOOR = 2**20  # members smaller than this are never called bombs: a flat-colour BMP compresses 1000x
_DIRECTORY_BYTES = 2**10  # a zip's directory may use this much per allowed entry (names, extras) before refusal
MAX_NAME = 120  # characters in one sanitised file or folder name
_MAX_SHOWN = 200  # characters of a name repeated back in a reason
_EOCD = struct.Struct("<4s4H2LH")  # zip end-of-central-directory record
# What unpacking a damaged member raises (bz2 raises OSError, reported as 'could not be copied').
DAMAGED = (zipfile.BadZipFile, zlib.error, LZMAError, EOFError, NotImplementedError, RuntimeError, ValueError)
UNSAFE = "unsafe path in the zip"


class Refused(Exception):
    """A file or zip is not taken; the message says why, in plain words."""


def open_zip(f: BinaryIO, max_members: int) -> zipfile.ZipFile:
    """The zip in `f`, or `Refused`; its entries are counted from the end record before the directory is parsed."""
    too_many = "the zip lists {:,} entries, more than the " + f"{max_members:,} opened from one zip"
    n, directory = _listed_entries(f) or (0, 0)
    if n > max_members:
        raise Refused(too_many.format(n))
    if directory > max_members * _DIRECTORY_BYTES:
        raise Refused(f"the zip's directory ({size_words(directory)}) is too large for {max_members:,} entries")
    try:
        zf = zipfile.ZipFile(f)
    except Exception as exc:  # BadZipFile, EOFError, OSError, ValueError...: a damaged or foreign file
        logger.debug("unreadable zip", exc_info=True)
        raise Refused("not a readable zip file") from exc
    if len(zf.infolist()) > max_members:  # the end record understated the count
        zf.close()
        raise Refused(too_many.format(len(zf.infolist())))
    return zf


def _listed_entries(f: BinaryIO) -> tuple[int, int] | None:
    """(entries, directory bytes) from a zip's end record, read without parsing the directory; None if unknown."""
    try:
        size = f.seek(0, os.SEEK_END)
        f.seek(max(0, size - _EOCD.size - 0xFFFF))  # the record ends with a comment of up to 64 KB
        tail = f.read()
        at = tail.rfind(b"PK\x05\x06")
        if at < 0 or len(tail) - at < _EOCD.size:
            return None
        entries, directory = _EOCD.unpack_from(tail, at)[4:6]
        if entries == 0xFFFF or directory == 0xFFFFFFFF:  # Zip64: counted after opening instead
            return None
        return entries, directory
    except (OSError, ValueError, struct.error):
        return None
    finally:
        f.seek(0)


def member_parts(raw: str) -> tuple[str, ...] | None:
    """The path components of a member name, or None when it could point outside the folder."""
    if raw.startswith("/") or re.match(r"[A-Za-z]:", raw):
        return None
    parts = tuple(p for p in raw.split("/") if p not in ("", "."))
    return None if ".." in parts else parts


def member_problem(info: zipfile.ZipInfo, max_ratio: int) -> str | None:
    """Why a member cannot be taken, judged from its listing (encrypted, or a bomb by its ratio); None if it can."""
    if info.flag_bits & 0x1:
        return "encrypted in the zip: unzip it and upload the files"
    if info.file_size > _RATIO_FLOOR and info.file_size > max_ratio * max(info.compress_size, 1):
        return "compressed too well to be an image: looks like a zip bomb"
    return None


def clean_name(name: str) -> str:
    """A safe file or folder name: letters, digits, space, '-', '_', '.'; no leading dot; at most 120 characters."""
    name = unicodedata.normalize("NFC", name)  # macOS zips spell 'é' as 'e' plus a combining accent
    name = "".join(c if c.isalnum() or c in " -_." else "_" for c in name)
    return name.strip(" .")[:MAX_NAME].rstrip(" ") or "_"


def shown_name(name: str) -> str:
    """A name fit to repeat back to a person: control characters replaced, long names cut."""
    name = "".join("?" if unicodedata.category(c)[0] == "C" else c for c in name)
    return name if len(name) <= _MAX_SHOWN else name[: _MAX_SHOWN - 1] + "…"


def size_words(n: int) -> str:
    """Bytes in words, rounded up so a file just over a limit never reads as equal to it: '30.1 MB'."""
    for unit, scale in (("GB", 2**30), ("MB", 2**20), ("KB", 2**10)):
        if n >= scale:
            return f"{math.ceil(n * 10 / scale) / 10:g} {unit}"
    return plural(n, "byte")


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"
