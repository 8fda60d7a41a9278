"""Videos in galleries, on real folders: one item per video and one row per sampled frame, incremental and resumable
like images; a damaged video is recorded with its error and never harms the gallery; old stores open as they were."""

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mbm import sync_video, video
from mbm.data.shapes import make_scene, render
from mbm.gallery import FRAME_IDS, Gallery


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """The built-in example (15 s), small and at 4 frames a second: cheap to write and to decode."""
    return video.write_example(tmp_path_factory.mktemp("clip") / "example.mp4", fps=4, size=96)


def make_folder(root: Path, clip: Path) -> Path:
    """Three images, the example video, an animated GIF (a video), a still GIF (an image) and a damaged video."""
    root.mkdir()
    for i in range(3):
        render(make_scene("test", i), 96).save(root / f"scene{i}.png")
    shutil.copy(clip, root / "example.mp4")
    frames = [video.example_frame(t, 64) for t in (1.0, 2.0, 3.0)]
    frames[0].save(root / "moving.gif", save_all=True, append_images=frames[1:], duration=1000, loop=0)
    Image.new("RGB", (64, 64), "red").save(root / "still.gif")
    (root / "broken.mp4").write_bytes(clip.read_bytes()[:300])
    return root


def frame_rows(gallery: Gallery) -> list[tuple]:
    return gallery.db.all("SELECT i.path, f.id, f.t FROM frames f JOIN items i ON i.id=f.item_id ORDER BY i.path, f.t")


def test_videos_are_indexed_beside_images_one_row_per_frame(tmp_path, clip, shapes_model):
    folder = make_folder(tmp_path / "g", clip)
    gallery = Gallery(folder, shapes_model)
    report = gallery.sync()

    assert (report.added, report.encoded, report.videos, report.frames) == (7, 4, 3, 15 + 3)
    assert list(dict(report.skipped)) == ["broken.mp4"] and dict(report.skipped)["broken.mp4"].startswith("broken.mp4 ")
    assert len(gallery) == 4 + 2  # images (the still GIF one of them) and the two readable videos
    times = {}
    for path, _, t in frame_rows(gallery):
        times.setdefault(path, []).append(t)
    assert times == {"example.mp4": [float(s) for s in range(15)], "moving.gif": [0.0, 1.0, 2.0]}
    frames = gallery.frames()
    assert len(gallery.index) == 4 + 18 and frames.vectors.shape == (18, shapes_model.embed_dim)
    (video_id,) = {i for i, p in gallery.db.all("SELECT item_id, path FROM frames f JOIN items i ON i.id=f.item_id")
                   if p == "example.mp4"}
    assert gallery.item(video_id).is_video and gallery.frame_thumbnail(gallery.item(video_id), 3.0).is_file()
    assert gallery.sync().summary().startswith("0 added, 0 changed, 0 renamed, 0 removed, 7 unchanged; 0 images")
    _, ids = gallery.index.search(frames.vectors[5], 1)
    assert ids[0][0] == FRAME_IDS + frames.ids[5]  # a frame finds itself


def test_a_changed_video_re_encodes_only_itself(tmp_path, clip, shapes_model):
    folder = make_folder(tmp_path / "g", clip)
    gallery = Gallery(folder, shapes_model)
    gallery.sync()
    before = frame_rows(gallery)
    video.write_example(folder / "example.mp4", fps=4, size=96, seconds=6)  # a shorter cut of it

    report = gallery.sync()

    assert (report.changed, report.encoded, report.videos, report.frames) == (1, 0, 1, 6)
    after = frame_rows(gallery)
    assert [r for r in after if r[0] != "example.mp4"] == [r for r in before if r[0] != "example.mp4"]
    assert [t for p, _, t in after if p == "example.mp4"] == [float(s) for s in range(6)]
    assert len(gallery.frames().ids) == 6 + 3


def test_an_interrupted_sync_keeps_the_frames_it_committed_and_resumes(tmp_path, clip, shapes_model, monkeypatch):
    folder = tmp_path / "g"
    folder.mkdir()
    shutil.copy(clip, folder / "example.mp4")

    class Interrupted:  # the model, until the second batch of frames: then the process "dies"
        def __init__(self):
            self.calls = 0

        def __getattr__(self, name):
            return getattr(shapes_model, name)

        def encode_pixels(self, pixels, batch_size=None):
            self.calls += 1
            if self.calls == 2:
                raise KeyboardInterrupt
            return shapes_model.encode_pixels(pixels, batch_size)

    monkeypatch.setattr(sync_video, "FRAME_BATCH", 4)
    with pytest.raises(KeyboardInterrupt):
        Gallery(folder, Interrupted()).sync()
    committed = frame_rows(Gallery(folder, shapes_model))
    assert [t for *_, t in committed] == [0.0, 1.0, 2.0, 3.0]

    report = Gallery(folder, shapes_model).sync()

    assert (report.videos, report.frames) == (1, 11)  # only what was not committed
    rows = frame_rows(Gallery(folder, shapes_model))
    assert rows[:4] == committed and [t for *_, t in rows] == [float(s) for s in range(15)]


def test_kill_9_in_the_middle_of_a_video_loses_nothing_committed(tmp_path, shapes_model):
    """`mbm index` killed while it embeds a 15-minute video (tiny, one frame a second); run again, it embeds only
    the frames it had not committed, and no frame twice."""
    folder, cache = tmp_path / "g", tmp_path / "cache"
    video.write_example(folder / "long.mp4", fps=1, size=32, seconds=900)
    proc = subprocess.Popen([sys.executable, "-m", "mbm", "index", str(folder), "--cache", str(cache),
                             "--model", shapes_model.name],  # the model the resumed sync below uses
                            cwd=Path(__file__).resolve().parents[1], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    done = _wait_for_frames(cache, proc, at_least=64)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert 0 < done < 900, "the kill should land in the middle of the video"

    (store,) = (cache / "galleries").iterdir()
    gallery = Gallery(folder, shapes_model, store=store)
    report = gallery.sync()

    assert report.frames <= 900 - done  # it resumed past what was committed
    times = [t for *_, t in frame_rows(gallery)]
    assert times == [float(s) for s in range(900)] and len(gallery.frames().ids) == 900


def _wait_for_frames(cache: Path, proc: subprocess.Popen, at_least: int, timeout: float = 120) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        stores = list((cache / "galleries").glob("*/gallery.sqlite")) if (cache / "galleries").is_dir() else []
        try:
            with sqlite3.connect(f"file:{stores[0]}?mode=ro", uri=True, timeout=30) as db:
                n = db.execute("SELECT COUNT(*) FROM frame_vectors").fetchone()[0]
        except (IndexError, sqlite3.OperationalError):  # no store yet, or its schema is being created
            n = 0
        if n >= at_least:
            return n
        time.sleep(0.02)
    raise AssertionError(f"the index command ended or stalled before {at_least} frames were stored")


def test_a_cut_off_video_keeps_its_first_seconds_and_says_what_is_wrong(tmp_path, clip, shapes_model):
    folder = tmp_path / "g"
    folder.mkdir()
    (folder / "partial.mp4").write_bytes(clip.read_bytes()[: clip.stat().st_size * 6 // 10])
    render(make_scene("test", 1), 96).save(folder / "scene.png")
    gallery = Gallery(folder, shapes_model)
    report = gallery.sync()
    assert "partial.mp4 is" in dict(report.skipped)["partial.mp4"] and "frames before it were read" in \
        dict(report.skipped)["partial.mp4"]
    seen = [t for _, _, t in frame_rows(gallery)]
    assert 4 <= len(seen) < 15 and seen[:4] == [0.0, 1.0, 2.0, 3.0]
    assert len(gallery) == 2 and gallery.sync().frames == 0  # searchable, and not decoded again


def test_a_store_written_before_videos_opens_and_gains_them(tmp_path, clip, shapes_model):
    folder = tmp_path / "g"
    folder.mkdir()
    for i in range(3):
        render(make_scene("test", i), 96).save(folder / f"scene{i}.png")
    Gallery(folder, shapes_model).sync()
    with sqlite3.connect(folder / ".mbm" / "gallery.sqlite") as db:  # as the store was before videos
        db.executescript("DROP TABLE frame_vectors; DROP TABLE frames; DROP TABLE videos;")
        old = db.execute("SELECT id, path, sha256 FROM items ORDER BY id").fetchall()
    shutil.copy(clip, folder / "example.mp4")

    gallery = Gallery(folder, shapes_model)
    report = gallery.sync()

    assert (report.added, report.unchanged, report.encoded, report.frames) == (1, 3, 0, 15)
    assert gallery.db.all("SELECT id, path, sha256 FROM items WHERE path != 'example.mp4' ORDER BY id") == old
    query = shapes_model.encode_texts(["a red circle"])[0]
    assert np.isfinite(gallery.index.search(query, 5)[0]).all()
