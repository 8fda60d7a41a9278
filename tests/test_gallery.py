"""Galleries on real folders: SQLite truth, FAISS derived, incremental and resumable sync."""

import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mbm.data.language import describe
from mbm.data.shapes import make_scene, render
from mbm.gallery import Gallery

ROOT = Path(__file__).resolve().parents[1]


def write_folder(folder: Path, n: int, size=(96, 160), start=0, sidecars=True) -> list[Path]:
    """`n` JPEG scenes of varied sizes in two sub-folders, half with caption sidecars."""
    paths = []
    for i in range(start, start + n):
        scene = make_scene("test", i)
        side = size[0] + (i * 37) % (size[1] - size[0] + 1)
        path = folder / ("a" if i % 2 else "b") / f"scene_{i:04d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        render(scene, size=side, supersample=1).save(path, quality=90)
        if sidecars and i % 2:
            path.with_suffix(".txt").write_text(describe(scene))
        paths.append(path)
    return paths


def originals(folder: Path) -> list[Path]:
    """The image files of a folder, not the thumbnails in its store."""
    return sorted(p for p in folder.rglob("*.jpg") if ".mbm" not in p.parts)


def digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and ".mbm" not in p.parts}


@pytest.fixture()
def folder(tmp_path):
    write_folder(tmp_path / "photos", 40)
    return tmp_path / "photos"


def test_sync_indexes_every_readable_image_and_records_the_rest(folder, shapes_model):
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.jpg").write_text("this is not an image")
    good = (folder / "b" / "scene_0000.jpg").read_bytes()
    (folder / "cut.jpg").write_bytes(good[: len(good) // 2])
    Image.new("CMYK", (50, 40), (0, 255, 255, 0)).save(folder / "cmyk.jpg")
    Image.fromarray(np.linspace(0, 65535, 64 * 64).astype(np.uint16).reshape(64, 64)).save(folder / "deep.png")
    before = digest(folder)

    report = Gallery(folder, shapes_model).sync()

    assert report.added == 45 and report.encoded == 42
    errors = dict(report.skipped)
    assert set(errors) == {"empty.jpg", "notes.jpg", "cut.jpg"}
    assert "empty" in errors["empty.jpg"] and "cut.jpg" in errors["cut.jpg"]
    assert digest(folder) == before  # originals are only read
    gallery = Gallery(folder, shapes_model)
    assert len(gallery) == 42
    item = gallery.items(gallery.vectors()[0][:1])[0]
    assert max(Image.open(gallery.thumbnail(item)).size) <= 256


def test_captions_come_from_sidecars_else_the_file_name(folder, shapes_model):
    gallery = Gallery(folder, shapes_model)
    gallery.sync()
    captions = {it.path: it.caption for it in gallery.items(gallery.vectors()[0])}
    assert captions["a/scene_0001.jpg"] == describe(make_scene("test", 1))
    assert captions["b/scene_0002.jpg"] == "scene 0002"


def test_resync_with_nothing_changed_encodes_nothing(folder, shapes_model):
    Gallery(folder, shapes_model).sync()
    again = Gallery(folder, shapes_model).sync()
    assert (again.encoded, again.captions_encoded, again.unchanged, again.added) == (0, 0, 40, 0)


def test_changed_files_and_only_those_are_re_encoded(folder, shapes_model):
    gallery = Gallery(folder, shapes_model)
    gallery.sync()
    ids_before = dict(gallery.db.all("SELECT path, id FROM items"))
    changed = originals(folder)[:10]
    for i, path in enumerate(changed):
        render(make_scene("val", i), size=100).save(path, quality=90)
        os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
    touched = originals(folder)[10:15]
    for path in touched:  # same bytes, new mtime: no work
        os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))

    report = gallery.sync()

    assert (report.changed, report.encoded, report.unchanged) == (10, 10, 30)
    assert dict(gallery.db.all("SELECT path, id FROM items")) == ids_before  # the same items, new embeddings
    new = render(make_scene("val", 0), size=100)
    top = gallery.items(gallery.index.search(shapes_model.encode_images([new]), 1)[1][0])[0]
    assert folder / top.path == changed[0]


def test_deleted_files_disappear_and_renames_keep_their_embeddings(folder, shapes_model):
    gallery = Gallery(folder, shapes_model)
    gallery.sync()
    files = originals(folder)
    for path in files[:10]:
        path.unlink()
    files[10].rename(folder / "renamed.jpg")

    report = gallery.sync()

    assert (report.removed, report.renamed, report.encoded) == (10, 1, 0)
    assert len(gallery) == 30
    paths = {p for (p,) in gallery.db.all("SELECT path FROM items")}
    assert "renamed.jpg" in paths and not {str(p.relative_to(folder)) for p in files[:10]} & paths
    assert len(list((gallery.store / "thumbs").glob("*/*.jpg"))) == 30  # thumbnails of deleted files go too


def test_a_sidecar_edit_re_encodes_the_caption_only(folder, shapes_model):
    gallery = Gallery(folder, shapes_model)
    gallery.sync()
    (folder / "a" / "scene_0001.txt").write_text("a completely different caption")
    report = gallery.sync()
    assert (report.encoded, report.captions_encoded) == (0, 1)
    assert "a completely different caption" in gallery.captions()[1]


def test_file_name_captions_wait_until_a_view_asks_for_them(tmp_path, shapes_model):
    folder = tmp_path / "photos"
    write_folder(folder, 4, sidecars=True)
    write_folder(folder / "named", 6, start=4, sidecars=False)  # captions from file names: "scene 0004", ...
    gallery = Gallery(folder, shapes_model, store=tmp_path / "store")
    report = gallery.sync()
    assert report.encoded == 10 and report.captions_encoded == 2  # only the 2 sidecars' real text
    ids, captions, vecs = gallery.captions()  # image->text asks: the rest are embedded now, once
    assert len(ids) == 10 and sum(c.startswith("scene") for c in captions) == 8
    np.testing.assert_allclose(vecs, shapes_model.encode_texts(captions), atol=1e-5)
    assert gallery.sync().captions_encoded == 0 and len(gallery.captions()[0]) == 10


def test_descriptions_written_into_photos_are_captions_embedded_in_the_sync(tmp_path, shapes_model, monkeypatch):
    folder = tmp_path / "camera"
    folder.mkdir()
    for i, text in enumerate(["a red circle", "OLYMPUS DIGITAL CAMERA", None]):
        exif = Image.Exif()
        if text:
            exif[0x010E] = text  # EXIF ImageDescription, as a phone's or a photo tool's caption field writes it
        render(make_scene("test", i), size=96).save(folder / f"IMG_{i:04d}.jpg", exif=exif)
    gallery = Gallery(folder, shapes_model, store=tmp_path / "store")
    report = gallery.sync()
    captions = dict(gallery.db.all("SELECT path, caption FROM items"))
    assert captions == {"IMG_0000.jpg": "a red circle", "IMG_0001.jpg": "IMG 0001", "IMG_0002.jpg": "IMG 0002"}
    assert report.captions_encoded == 1  # real text is embedded with the images; file names wait for a view
    import mbm.sync
    headers = []
    monkeypatch.setattr(mbm.sync, "read_embedded_caption", lambda p: headers.append(p))
    assert gallery.sync().captions_encoded == 0 and headers == []  # unchanged files: the store says, no header read
    monkeypatch.undo()

    (folder / "IMG_0000.txt").write_text("a sidecar says more")  # a sidecar still wins ...
    gallery.sync()
    assert gallery.db.one("SELECT caption FROM items WHERE path='IMG_0000.jpg'") == "a sidecar says more"
    (folder / "IMG_0000.txt").unlink()  # ... and without it the file's own description comes back
    gallery.sync()
    assert gallery.db.one("SELECT caption FROM items WHERE path='IMG_0000.jpg'") == "a red circle"
    ids, texts, vecs = gallery.captions()
    np.testing.assert_allclose(vecs[texts.index("a red circle")], shapes_model.encode_texts(["a red circle"])[0],
                               atol=1e-5)


def test_a_store_from_before_embedded_descriptions_reads_them_once(tmp_path, shapes_model):
    folder = tmp_path / "camera"
    folder.mkdir()
    exif = Image.Exif()
    exif[0x010E] = "a blue square"
    render(make_scene("test", 3), size=96).save(folder / "IMG_0003.jpg", exif=exif)
    gallery = Gallery(folder, shapes_model, store=tmp_path / "store")
    gallery.sync()
    with gallery.db.transaction() as db:  # as an older mbm left it: the file name as caption, no 'captions' mark
        db.execute("UPDATE items SET caption='IMG 0003'")
        db.execute("DELETE FROM meta WHERE key='captions'")
    assert not gallery.up_to_date()
    assert gallery.sync().captions_encoded == 1
    assert gallery.db.one("SELECT caption FROM items") == "a blue square" and gallery.up_to_date()


def test_flat_index_returns_the_brute_force_ranking(folder, shapes_model):
    gallery = Gallery(folder, shapes_model)
    gallery.sync()
    ids, vecs = gallery.vectors()
    query = shapes_model.encode_texts(["a red circle"])[0]
    scores, found = gallery.index.search(query, 10)
    expected = np.argsort(-(vecs @ query), kind="stable")[:10]
    np.testing.assert_array_equal(found[0], ids[expected])
    np.testing.assert_allclose(scores[0], (vecs @ query)[expected], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("damage", ["delete", "truncate", "garbage"])
def test_a_damaged_index_file_costs_a_rebuild_never_data(folder, shapes_model, damage):
    gallery = Gallery(folder, shapes_model)
    gallery.sync()
    query = shapes_model.encode_texts(["a blue square"])[0]
    expected = gallery.index.search(query, 5)
    (path,) = (gallery.store / "index").glob("*.faiss")
    if damage == "delete":
        path.unlink()
    elif damage == "truncate":
        path.write_bytes(path.read_bytes()[:100])
    else:
        path.write_bytes(b"not a faiss index" * 10)

    reopened = Gallery(folder, shapes_model)

    got = reopened.index.search(query, 5)
    np.testing.assert_array_equal(got[1], expected[1])
    assert len(reopened) == 40 and path.stat().st_size > 1000


def test_switching_models_keeps_the_embeddings_of_both(folder, shapes_model):
    import torch

    from mbm.models import create_model
    other = create_model("mbm-shapes", device="cpu")
    with torch.no_grad():
        other.model.visual.attnpool.c_proj.weight.mul_(1.01)  # different weights, so another model
    other.key = other.key.split("#")[0] + "#other"
    Gallery(folder, shapes_model).sync()
    assert Gallery(folder, other).sync().encoded == 40
    assert Gallery(folder, shapes_model).sync().encoded == 0  # back again: nothing to redo
    models = Gallery(folder, shapes_model).db.all(
        "SELECT model, COUNT(*) FROM vectors WHERE kind='image' GROUP BY model")
    assert sorted(n for _, n in models) == [40, 40]


class _Counting:
    """The encoder, counting the images and texts it is asked to embed."""

    def __init__(self, encoder):
        self.encoder, self.images, self.texts = encoder, 0, 0

    def __getattr__(self, name):
        return getattr(self.encoder, name)

    def encode_pixels(self, pixels, batch_size=None):
        self.images += len(pixels)
        return self.encoder.encode_pixels(pixels, batch_size)

    def encode_texts(self, texts, batch_size=None):
        self.texts += len(texts)
        return self.encoder.encode_texts(texts, batch_size)


def test_a_copy_of_a_folder_with_shipped_vectors_indexes_without_the_model(folder, shapes_model, tmp_path):
    """What the built-in gallery does at a first start: the vectors come from the folder, for the same bytes and
    the same weights only; a changed file, other weights or a damaged vectors file fall back to the model."""
    import shutil
    original = Gallery(folder, shapes_model, store=tmp_path / "store-a")
    original.sync()
    shipped = original.write_shipped_vectors()
    assert shipped == folder / ".vectors" / "mbm-shapes.npz"
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    counting = _Counting(shapes_model)
    report = Gallery(copy, counting, store=tmp_path / "store-b").sync()
    assert (report.encoded, report.reused, counting.images, counting.texts) == (40, 40, 0, 0)
    query = shapes_model.encode_texts(["a red circle"])
    ranked = lambda g: [(it.path, round(s, 5)) for it, s in zip(g.items(g.index.search(query, 10)[1][0]),
                                                                  g.index.search(query, 10)[0][0])]
    assert ranked(Gallery(copy, shapes_model, store=tmp_path / "store-b")) == ranked(original)

    render(make_scene("val", 3), size=100).save(originals(copy)[0], quality=90)  # new bytes: its own vector
    shutil.rmtree(tmp_path / "store-b")
    counting = _Counting(shapes_model)
    report = Gallery(copy, counting, store=tmp_path / "store-b").sync()
    assert (report.encoded, report.reused, counting.images) == (40, 39, 1)

    other = _Counting(shapes_model)
    other.key = "mbm-shapes#retrained"  # the same name, other weights: the shipped vectors do not apply
    assert Gallery(copy, other, store=tmp_path / "store-c").sync().reused == 0 and other.images == 40

    shipped_copy = copy / ".vectors" / "mbm-shapes.npz"
    shipped_copy.write_bytes(shipped_copy.read_bytes()[:500])  # damaged: ignored, everything embedded
    counting = _Counting(shapes_model)
    assert Gallery(copy, counting, store=tmp_path / "store-d").sync().reused == 0 and counting.images == 40


def test_the_built_in_gallery_ships_the_vectors_of_the_embedded_models(shapes_model):
    """Retraining a model or changing a gallery file without `index --ship-vectors` would make every first start
    index again: the shipped vectors must be those of the weights in assets/ and cover every file."""
    from mbm.models import create_model
    from mbm.models._registry import EMBEDDED
    from mbm.shipped import SHIPPED
    gallery = ROOT / "assets" / "gallery"
    files = {hashlib.sha256(p.read_bytes()).hexdigest() for p in gallery.rglob("*")
             if p.suffix.lower() in (".png", ".jpg") and SHIPPED not in p.parts}
    videos = {hashlib.sha256(p.read_bytes()).hexdigest() for p in gallery.rglob("*.mp4")}
    assert videos  # the example video of the shapes world
    shipped = sorted((gallery / SHIPPED).glob("*.npz"))
    assert EMBEDDED in [p.stem for p in shipped]  # the model a fresh `python app.py` serves
    for path in shipped:
        encoder = shapes_model if path.stem == "mbm-shapes" else create_model(path.stem, device="cpu")
        with np.load(path, allow_pickle=False) as z:
            assert str(z["model"]) == encoder.key, f"{path.name} is stale: python -m mbm index ... --ship-vectors"
            assert set(z["sha256"].tolist()) == files
            frames = {k.rsplit("-", 1)[0] for k in z["frame_keys"].tolist()}  # a video's frames: by its bytes
            assert frames == videos and len(z["frame_keys"]) >= 15 * len(videos)


def test_kill_9_during_sync_then_sync_again_loses_and_duplicates_nothing(tmp_path, shapes_model):
    folder = tmp_path / "big"
    files = write_folder(folder, 400, size=(600, 900), sidecars=False)
    cache = tmp_path / "cache"
    proc = subprocess.Popen([sys.executable, "-m", "mbm", "index", str(folder), "--cache", str(cache),
                             "--model", shapes_model.name],  # the model the resumed sync below uses
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    done = _wait_for_vectors(cache, proc, at_least=64)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert 0 < done < len(files), "the kill should land in the middle of the sync"

    (store,) = (cache / "galleries").iterdir()
    gallery = Gallery(folder, shapes_model, store=store)
    report = gallery.sync()

    assert len(gallery) == len(files) == _count(store, "SELECT COUNT(*) FROM vectors WHERE kind='image'")
    assert report.encoded <= len(files) - done  # it resumed: what was committed before the kill stays
    paths = [p for (p,) in gallery.db.all("SELECT path FROM items")]
    assert len(paths) == len(set(paths)) == len(files)


def _count(store: Path, sql: str) -> int:
    with sqlite3.connect(f"file:{store / 'gallery.sqlite'}?mode=ro", uri=True, timeout=30) as db:
        return db.execute(sql).fetchone()[0]


def _wait_for_vectors(cache: Path, proc: subprocess.Popen, at_least: int, timeout: float = 120) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        stores = list((cache / "galleries").glob("*/gallery.sqlite")) if (cache / "galleries").is_dir() else []
        if stores:
            try:
                n = _count(stores[0].parent, "SELECT COUNT(*) FROM vectors WHERE kind='image'")
            except sqlite3.OperationalError:  # the schema is being created
                n = 0
            if n >= at_least:
                return n
        time.sleep(0.02)
    raise AssertionError(f"the index command ended or stalled before {at_least} images were stored")


def test_the_2000_jpeg_bar_counts(tmp_path, shapes_model):
    """The engine issue's bar on 2,000 JPEGs, by counts (the timings are in benchmarks/bench_sync.py)."""
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(2000):
        render(make_scene("train", i), size=64, supersample=1).save(folder / f"{i:04d}.jpg", quality=85)
    gallery = Gallery(folder, shapes_model)
    assert gallery.sync().encoded == 2000 and len(gallery) == 2000
    assert gallery.sync().encoded == 0

    ids = dict(gallery.db.all("SELECT path, id FROM items"))
    rewritten = [f"{i:04d}.jpg" for i in range(0, 2000, 200)]
    for i, name in enumerate(rewritten):
        render(make_scene("val", i), size=64, supersample=1).save(folder / name, quality=85)
        os.utime(folder / name, ns=(time.time_ns(), time.time_ns() + 10**9))
    before = {i: v.tobytes() for i, v in zip(*gallery.vectors())}
    report = gallery.sync()
    after = {i: v.tobytes() for i, v in zip(*gallery.vectors())}
    assert report.encoded == 10
    assert {i for i in after if after[i] != before[i]} == {ids[name] for name in rewritten}

    deleted = [f"{i:04d}.jpg" for i in range(7, 2000, 200)]
    for name in deleted:
        (folder / name).unlink()
    report = gallery.sync()
    assert (report.removed, report.encoded, len(gallery)) == (10, 0, 1990)
    assert set(before) - set(gallery.vectors()[0].tolist()) == {ids[name] for name in deleted}
    assert len(gallery.index) == 1990
