"""Uploads: real images and real (sometimes hostile) zips land in the visitor's folder, and nowhere else."""

import io
import os
import struct
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from mbm import uploads
from mbm.data.images import read_sidecar_caption
from mbm.sessions import SessionSpace, remove_folder, session_folder
from mbm.uploads import Quota, UploadLimits, take_uploads

NOT_A_ZIP = "not a readable zip file"
UNSAFE = "unsafe path in the zip"


def _image(fmt: str = "PNG", color: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(buf, format=fmt)
    return buf.getvalue()


PNG, JPEG = _image("PNG"), _image("JPEG")


def _zip_bytes(members: list[tuple[str | zipfile.ZipInfo, bytes]]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members:
            zf.writestr(name, data)
    return buf.getvalue()


def _write(folder: Path, name: str, data: bytes) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _files(folder: Path) -> set[str]:
    """Every file under `folder`, hidden ones included, as '/' paths: leftovers would show here."""
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()} if folder.exists() else set()


@pytest.fixture
def box(tmp_path):
    """(uploads folder, dest deep inside tmp_path, check) where check() asserts nothing changed outside dest."""
    src, dest = tmp_path / "in", tmp_path / "a" / "b" / "dest"
    src.mkdir()
    dest.parent.mkdir(parents=True)

    def outside() -> set[str]:
        return {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if not p.is_relative_to(dest)}

    def check(before: set[str]) -> None:
        assert outside() == before
        assert not Path("/abs/evil.png").exists() and not Path("/evil.png").exists()

    return src, dest, outside, check


def _evil(name: str, mode: int | None = None) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    if mode is not None:
        info.external_attr = mode << 16
    return info


@pytest.mark.parametrize("member, data, reason", [
    ("../evil.png", PNG, UNSAFE),
    ("../../../evil.png", PNG, UNSAFE),
    ("ok/../../../evil.png", PNG, UNSAFE),
    ("/abs/evil.png", PNG, UNSAFE),
    ("C:\\evil.png", PNG, UNSAFE),
    ("C:evil.png", PNG, UNSAFE),
    ("..\\..\\evil.png", PNG, UNSAFE),
    (_evil("link.png", 0o120777), b"../../../../etc/passwd", "a symbolic link in the zip is not followed"),
    ("inner.zip", _zip_bytes([("x.png", PNG)]), "a zip inside a zip is not opened"),
    ("notes.pdf", b"%PDF-1.4", "not an image (.pdf)"),
    ("README", b"hello", "not an image (no file extension)"),
    ("lonely.txt", b"a caption for nothing", "not an image (.txt)"),
    ("__MACOSX/._good.png", b"\0" * 10, None),
    (".DS_Store", b"\0" * 10, None),
    ("photos/.hidden.png", PNG, None),
    (".mbm/gallery.sqlite", b"not a db", None),
    ("empty-folder/", b"", None),
])
def test_hostile_and_odd_members(box, member, data, reason):
    src, dest, outside, check = box
    upload = _write(src, "evil.zip", _zip_bytes([("good.png", PNG), (member, data)]))
    before = outside()
    intake = take_uploads([upload], dest)
    assert _files(dest) == {"good.png"}
    name = member.filename if isinstance(member, zipfile.ZipInfo) else member
    assert intake.skipped == ([] if reason is None else [(f"evil.zip: {name}", reason)])
    assert intake.added == [dest / "good.png"]
    check(before)


def test_images_and_zip_members_land_in_dest_with_their_folders(box):
    src, dest, outside, check = box
    zipped = _zip_bytes([("trip/c.png", PNG), ("trip/sub/d.jpeg", JPEG), ("notes.pdf", b"%PDF"), ("trip/", b"")])
    files = [_write(src, "a.png", PNG), _write(src, "b.JPG", JPEG), _write(src, "photos.zip", zipped)]
    before = outside()
    intake = take_uploads(files, dest)
    assert _files(dest) == {"a.png", "b.jpg", "trip/c.png", "trip/sub/d.jpeg"}
    assert (dest / "trip/sub/d.jpeg").read_bytes() == JPEG and (dest / "a.png").read_bytes() == PNG
    assert intake.skipped == [("photos.zip: notes.pdf", "not an image (.pdf)")]
    assert intake.summary() == "4 images added, 1 skipped"
    check(before)


def test_collisions_never_overwrite(box):
    src, dest, _, _ = box
    _write(dest, "a.png", b"old")
    files = [_write(src / "1", "a.png", PNG), _write(src / "2", "a.png", JPEG)]
    intake = take_uploads(files, dest)
    assert _files(dest) == {"a.png", "a-1.png", "a-2.png"}
    assert (dest / "a.png").read_bytes() == b"old"
    assert (dest / "a-1.png").read_bytes() == PNG and (dest / "a-2.png").read_bytes() == JPEG
    assert intake.added == [dest / "a-1.png", dest / "a-2.png"]


def test_the_same_file_uploaded_again_is_the_same_item_not_a_renamed_copy(box):
    src, dest, _, _ = box
    first = take_uploads([_write(src, "notimage.jpg", b"not a picture")], dest)
    again = take_uploads([_write(src / "again", "notimage.jpg", b"not a picture")], dest)
    zipped = take_uploads([_write(src, "same.zip", _zip_bytes([("notimage.jpg", b"not a picture")]))], dest)
    other = take_uploads([_write(src / "other", "notimage.jpg", b"other bytes")], dest)
    assert _files(dest) == {"notimage.jpg", "notimage-1.jpg"}  # only different bytes get a new name
    assert first.added == [dest / "notimage.jpg"] and other.added == [dest / "notimage-1.jpg"]
    assert again.added == zipped.added == [] and again.skipped == zipped.skipped == []
    assert again.summary() == "0 images added, 1 already there, 0 skipped"
    assert zipped.already == ["same.zip: notimage.jpg"]


def test_a_copy_brings_no_second_caption(box):
    src, dest, _, _ = box
    files = [_write(src, "a.png", PNG), _write(src, "a.txt", b"a red square")]
    take_uploads(files, dest)
    again = take_uploads(files, dest)
    assert _files(dest) == {"a.png", "a.txt"}
    assert again.skipped == [] and again.already == ["a.png"]


@pytest.mark.parametrize("given, stored", [
    ("my photo (1).png", "my photo _1_.png"),
    ("cafe\u0301.png", "caf\u00e9.png"),  # macOS spelling of 'café' becomes one letter
    ("€uro;rm -rf.PNG", "_uro_rm -rf.png"),
    ("x" * 300 + ".png", "x" * 116 + ".png"),
    ("Urlaub 2023!/..hidden-ish/ok.png", None),  # a hidden folder: dropped
    ("Urlaub 2023!/ok.png", "Urlaub 2023_/ok.png"),
    ("a<b>/c|d.png", "a_b_/c_d.png"),
])
def test_names_are_sanitised(box, given, stored):
    src, dest, _, _ = box
    upload = _write(src, "n.zip", _zip_bytes([(given, PNG)]))
    take_uploads([upload], dest)
    assert _files(dest) == ({stored} if stored else set())


def test_captions_are_kept_only_beside_their_image(box):
    src, dest, _, _ = box
    zipped = _zip_bytes([("trip/cat.jpg", JPEG), ("trip/cat.txt", b"a grey cat"), ("trip/dog.txt", b"no dog"),
                         ("cat.txt", b"wrong folder"), ("big.png", PNG), ("big.txt", b"x" * 20_000)])
    files = [_write(src, "t.zip", zipped), _write(src, "sun.png", PNG), _write(src, "sun.txt", b"sunset")]
    intake = take_uploads(files, dest)
    assert _files(dest) == {"trip/cat.jpg", "trip/cat.txt", "big.png", "sun.png", "sun.txt"}
    assert read_sidecar_caption(dest / "trip/cat.jpg") == "a grey cat"
    assert sorted(intake.skipped) == [("t.zip: big.txt", "19.6 KB is over the 10 KB limit"),
                                      ("t.zip: cat.txt", "not an image (.txt)"),
                                      ("t.zip: trip/dog.txt", "not an image (.txt)")]
    assert intake.summary() == "3 images added with 2 captions, 3 skipped"


def test_caption_follows_its_renamed_image_and_never_captions_another(box):
    src, dest, _, _ = box
    _write(dest, "sun.png", b"old")  # an earlier upload without a caption
    intake = take_uploads([_write(src, "sun.jpg", JPEG), _write(src, "sun.txt", b"sunset")], dest)
    assert _files(dest) == {"sun.png", "sun-1.jpg", "sun-1.txt"}
    assert read_sidecar_caption(dest / "sun-1.jpg") == "sunset" and read_sidecar_caption(dest / "sun.png") is None
    assert intake.skipped == []


def test_caption_of_a_skipped_image_is_skipped(box):
    src, dest, _, _ = box
    files = [_write(src, "a.png", PNG), _write(src, "b.png", PNG), _write(src, "b.txt", b"bee")]
    intake = take_uploads(files, dest, UploadLimits(max_files=1))
    assert _files(dest) == {"a.png"}
    assert intake.skipped == [("b.png", "over the limit of 1 images per upload"),
                              ("b.txt", "the caption of an image that was not added")]


def _sized(n: int) -> bytes:
    return os.urandom(n)  # incompressible, so zip ratios stay near 1


@pytest.mark.parametrize("limits, sizes, landed, reasons", [
    (UploadLimits(max_files=2), [10, 10, 10], 2, ["over the limit of 2 images per upload"]),
    (UploadLimits(max_file_bytes=2048), [1000, 3000], 1, ["3 KB is over the 2 KB limit"]),
    (UploadLimits(max_file_bytes=2**20), [2**20 + 1], 0, ["1.1 MB is over the 1 MB limit"]),
    (UploadLimits(max_total_bytes=2500), [1000, 1000, 1000, 100], 3, ["over the 2.5 KB limit for one upload"]),
])
def test_limits(box, limits, sizes, landed, reasons):
    src, dest, _, _ = box
    loose = [_write(src, f"f{i}.png", _sized(n)) for i, n in enumerate(sizes)]
    zipped = _write(src, "z.zip", _zip_bytes([(f"z{i}.png", _sized(n)) for i, n in enumerate(sizes)]))
    intake = take_uploads(loose, dest, limits)
    assert len(_files(dest)) == landed
    assert [r for _, r in intake.skipped] == reasons
    intake = take_uploads([zipped], dest / "z", limits)
    assert len(_files(dest / "z")) == landed
    assert [r for _, r in intake.skipped] == reasons


def test_files_limit_counts_loose_files_and_zip_members_together(box):
    src, dest, _, _ = box
    files = [_write(src, "a.png", PNG), _write(src, "z.zip", _zip_bytes([("b.png", PNG), ("c.png", PNG)]))]
    intake = take_uploads(files, dest, UploadLimits(max_files=2))
    assert _files(dest) == {"a.png", "b.png"}
    assert intake.skipped == [("z.zip: c.png", "over the limit of 2 images per upload")]


def _many(n: int) -> bytes:
    return _zip_bytes([(f"{i}.png", PNG) for i in range(n)])


def test_zip_with_too_many_entries_is_refused_unread(box, monkeypatch):
    src, dest, outside, check = box
    upload = _write(src, "many.zip", _many(11))
    before = outside()

    def never(*args, **kwargs):
        raise AssertionError("the zip's directory was read")

    monkeypatch.setattr(uploads.zipfile, "ZipFile", never)
    intake = take_uploads([upload], dest, UploadLimits(max_zip_members=10))
    assert intake.skipped == [("many.zip", "the zip lists 11 entries, more than the 10 opened from one zip")]
    assert _files(dest) == set() and not dest.exists()
    check(before)


def test_zip_whose_end_record_understates_its_entries_is_still_refused(box):
    src, dest, _, _ = box
    data = bytearray(_many(11))
    at = data.rfind(b"PK\x05\x06")
    struct.pack_into("<HH", data, at + 8, 3, 3)  # entries on this disk, entries in total
    intake = take_uploads([_write(src, "liar.zip", bytes(data))], dest, UploadLimits(max_zip_members=10))
    assert intake.skipped == [("liar.zip", "the zip lists 11 entries, more than the 10 opened from one zip")]
    assert _files(dest) == set()


def test_zip_with_an_oversized_directory_is_refused(box):
    src, dest, _, _ = box
    infos = [zipfile.ZipInfo(f"{i}.png") for i in range(5)]
    for info in infos:
        info.comment = b"c" * 3000  # 15 KB of directory for 5 entries
    upload = _write(src, "fat.zip", _zip_bytes([(info, PNG) for info in infos]))
    intake = take_uploads([upload], dest, UploadLimits(max_zip_members=10))
    assert intake.skipped == [("fat.zip", "the zip's directory (14.9 KB) is too large for 10 entries")]
    assert _files(dest) == set()


def test_copy_stops_at_the_actual_bytes_when_a_declared_size_lies(tmp_path):
    """zipfile itself stops at a member's declared size; this guard holds for any source that does not."""
    batch = uploads._Batch(tmp_path, UploadLimits(max_file_bytes=2**20, max_total_bytes=5 * 2**19))
    for i, actual in enumerate([2**20 + 1, 2**20, 2**20, 2**20]):
        batch.take(uploads._Item(f"{i}.png", (), f"{i}.png", 10, lambda n=actual: io.BytesIO(bytes(n))))
    assert batch.intake.skipped == [("0.png", "over the 1 MB limit once unpacked (the zip understated its size)"),
                                    ("3.png", "over the 2.5 MB limit for one upload")]
    assert _files(tmp_path) == {"1.png", "2.png"}  # no partial files, no temporary files


def test_zip_with_exactly_the_limit_is_taken(box):
    src, dest, _, _ = box
    intake = take_uploads([_write(src, "ten.zip", _many(10))], dest, UploadLimits(max_zip_members=10))
    assert len(_files(dest)) == 10 and intake.skipped == []


def _truncated() -> bytes:
    data = _zip_bytes([("a.png", PNG), ("b.png", PNG)])
    return data[: len(data) // 2]


@pytest.mark.parametrize("data", [b"hello, not a zip", b"", _truncated(), PNG, b"PK\x05\x06" + b"\xff" * 18])
def test_unreadable_zips_are_skipped_not_raised(box, data):
    src, dest, outside, check = box
    files = [_write(src, "broken.zip", data), _write(src, "ok.png", PNG)]
    before = outside()
    intake = take_uploads(files, dest)
    assert intake.skipped == [("broken.zip", NOT_A_ZIP)]
    assert _files(dest) == {"ok.png"}
    check(before)


def _central_header(data: bytearray) -> int:
    at = data.rfind(b"PK\x01\x02")  # the last member's entry in the zip's directory
    assert at > 0
    return at


def test_zip_bomb_is_skipped_from_its_ratio(box):
    src, dest, outside, check = box
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        with zf.open("bomb.bmp", "w") as member:
            for _ in range(50):
                member.write(bytes(2**20))  # 50 MB of zeros: about 50 KB deflated
        zf.writestr("flat.bmp", bytes(512 * 2**10))  # compresses as well, but small files are never bombs
    upload = _write(src, "bomb.zip", buf.getvalue())
    before = outside()
    intake = take_uploads([upload], dest)
    assert intake.skipped == [("bomb.zip: bomb.bmp", "compressed too well to be an image: looks like a zip bomb")]
    assert _files(dest) == {"flat.bmp"}
    check(before)


def test_member_whose_header_understates_its_size_is_not_written(box):
    src, dest, outside, check = box
    data = bytearray(_zip_bytes([("liar.bmp", bytes(2 * 2**20))]))  # 2 MB of zeros, ratio ~1000
    struct.pack_into("<L", data, _central_header(data) + 24, 1000)  # now it claims 1000 bytes: ratio < 1
    upload = _write(src, "liar.zip", bytes(data))
    before = outside()
    intake = take_uploads([upload], dest)
    assert intake.skipped == [("liar.zip: liar.bmp", "damaged in the zip: it cannot be unpacked")]
    assert _files(dest) == set()  # no half file, no temporary file
    check(before)


def test_damaged_and_encrypted_members(box):
    src, dest, _, _ = box
    damaged = bytearray(_zip_bytes([("bad.png", PNG)]))
    damaged[30 + len("bad.png") + 2] ^= 0xFF  # a byte of the deflated data, after the local header
    encrypted = bytearray(_zip_bytes([("secret.png", PNG)]))
    encrypted[_central_header(encrypted) + 8] |= 0x1  # the 'encrypted' flag
    files = [_write(src, "damaged.zip", bytes(damaged)), _write(src, "locked.zip", bytes(encrypted))]
    intake = take_uploads(files, dest)
    assert intake.skipped == [("damaged.zip: bad.png", "damaged in the zip: it cannot be unpacked"),
                              ("locked.zip: secret.png", "encrypted in the zip: unzip it and upload the files")]
    assert _files(dest) == set()


def test_loose_odd_inputs(box):
    src, dest, _, _ = box
    files = [_write(src, "doc.pdf", b"%PDF"), src / "gone.png", _write(src, ".hidden.png", PNG), src]
    intake = take_uploads(files, dest)
    assert intake.skipped == [("gone.png", "the uploaded file is missing"), ("in", "the uploaded file is missing"),
                              ("doc.pdf", "not an image (.pdf)")]
    assert _files(dest) == set() and not dest.exists()  # nothing to write: dest is not even created
    assert take_uploads(None, dest).summary() == "0 images added, 0 skipped"
    assert take_uploads(str(_write(src, "one.webp", PNG)), dest).added == [dest / "one.webp"]
    with pytest.raises(TypeError, match="file paths"):
        take_uploads([b"bytes"], dest)


@pytest.mark.parametrize("field", ["max_files", "max_file_bytes", "max_total_bytes", "max_zip_members",
                                   "max_zip_ratio"])
def test_limits_must_be_positive(field):
    with pytest.raises(ValueError, match=field):
        UploadLimits(**{field: 0})


def test_session_folder_is_private_and_deterministic(tmp_path):
    a = session_folder(tmp_path, "abc123", b"s" * 32)
    assert a == session_folder(str(tmp_path), "abc123", b"s" * 32)
    assert a.parent == tmp_path / "sessions" and len(a.name) == 32 and int(a.name, 16) >= 0
    assert a != session_folder(tmp_path, "abc123", b"t" * 32)
    assert a != session_folder(tmp_path, "abc124", b"s" * 32)
    assert "abc123" not in a.name and not a.exists()
    with pytest.raises(ValueError, match="secret"):
        session_folder(tmp_path, "abc123", b"")
    with pytest.raises(ValueError, match="session_hash"):
        session_folder(tmp_path, "", b"s")


def test_remove_folder_only_deletes_inside_sessions(tmp_path):
    outside = _write(tmp_path / "keep", "a.png", PNG).parent
    link = tmp_path / "sessions" / "link"
    link.parent.mkdir()
    link.symlink_to(outside, target_is_directory=True)
    for path in [outside, tmp_path / "sessions", link]:
        with pytest.raises(ValueError, match="sessions"):
            remove_folder(path)
    assert (outside / "a.png").exists()
    mine = _write(tmp_path / "sessions" / "abc" / "images", "a.png", PNG).parent.parent
    remove_folder(mine)
    assert not mine.exists() and (tmp_path / "sessions").exists()
    remove_folder(mine)  # already gone: fine


def test_a_space_sweeps_only_its_own_old_or_abandoned_sessions(tmp_path):
    space = SessionSpace(tmp_path)
    old, fresh, busy, idle_open, idle_closed = (
        _write(space.folder(n) / "images", "a.png", PNG) for n in ("old", "fresh", "busy", "open", "closed"))
    past, recent = time.time() - 7200, time.time() - 120
    for path in [old, old.parent, old.parent.parent, busy.parent, busy.parent.parent]:
        os.utime(path, (past, past))  # 'busy' keeps one recent file one level down
    for path in [idle_open, idle_open.parent, idle_open.parent.parent, idle_closed, idle_closed.parent,
                 idle_closed.parent.parent]:
        os.utime(path, (recent, recent))
    assert space.sweep(idle_s=60, max_age_s=3600, is_open=lambda session: session == "open") == 2
    assert {p.parent.parent.exists() for p in (old, idle_closed)} == {False}
    assert all(p.exists() for p in (fresh, busy, idle_open))
    assert space.usage(space.folder("fresh") / "images") == (len(PNG), 1)
    space.close()
    assert not space.home.exists()


def test_a_second_process_on_the_same_cache_keeps_the_first_ones_sessions(tmp_path):
    code = ("import sys, time; from mbm.sessions import SessionSpace; s = SessionSpace(sys.argv[1]); "
            "(s.folder('x') / 'images').mkdir(parents=True); print(s.home, flush=True); time.sleep(60)")
    first = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                             cwd=Path(__file__).resolve().parents[1])
    try:
        home = Path(first.stdout.readline().strip())
        legacy = _write(tmp_path / "sessions" / "0123abcd" / "images", "a.png", PNG).parent
        second = SessionSpace(tmp_path)
        assert second.sweep_orphans() == 0  # the first process lives: its space is not an orphan
        assert home.is_dir() and legacy.is_dir() and len(list(home.iterdir())) == 2  # its lock and one session
    finally:
        first.kill()
        first.wait()
    assert second.sweep_orphans() == 1
    assert not home.exists() and legacy.exists()  # a folder of the old layout goes only once a day old
    second.close()

def test_a_session_quota_holds_across_batches_and_inside_a_zip(tmp_path):
    dest = tmp_path / "images"
    first = take_uploads([_write(tmp_path / "in", f"{i}.png", PNG) for i in range(3)], dest,
                         quota=Quota(max_bytes=10 * len(PNG), max_files=4))
    assert len(first.added) == 3 and not first.skipped
    used = SessionSpace.usage(dest)
    assert used == (3 * len(PNG), 3)
    members = [(f"z{i}.png", PNG) for i in range(4)]
    archive = tmp_path / "more.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for name, data in members:
            zf.writestr(name, data)
    second = take_uploads([archive], dest, quota=Quota(max_bytes=10 * len(PNG), max_files=4, used_bytes=used[0],
                                                       used_files=used[1]))
    assert len(second.added) == 1
    assert [reason for _, reason in second.skipped] == ["your uploads hold 4 files, the most one visitor may keep; "
                                                        "close the page to start again"] * 3
    third = take_uploads([archive], dest, quota=Quota(max_bytes=5 * len(PNG), max_files=100,
                                                      used_bytes=4 * len(PNG), used_files=4))
    assert len(third.added) == 1 and all("quota for uploads" in reason for _, reason in third.skipped)
    assert SessionSpace.usage(dest) == (5 * len(PNG), 5)
