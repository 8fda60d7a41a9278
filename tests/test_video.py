"""mbm.video: real video files written with PyAV (the example, cut-off and damaged copies, audio only), read back."""

from pathlib import Path

import av
import numpy as np
import pytest

from mbm import video
from mbm.video import Limits, VideoError

BUILT_IN = Path(__file__).resolve().parents[1] / "assets" / "gallery" / "videos" / "shapes-example.mp4"


@pytest.fixture(scope="module")
def example(tmp_path_factory) -> Path:
    return video.write_example(tmp_path_factory.mktemp("video") / "example.mp4")


def test_the_example_is_a_small_h264_file_sampled_once_a_second(example):
    info = video.probe(example)
    assert (info.width, info.height, info.codec, info.fps) == (256, 256, "h264", 12.0)
    assert info.duration == pytest.approx(video.EXAMPLE_SECONDS) and example.stat().st_size < 100_000
    frames = list(video.sample(example, side=128))
    assert [f.t for f in frames] == [float(s) for s in range(15)]
    assert all(f.image.size == (128, 128) and f.image.mode == "RGB" for f in frames)


@pytest.mark.parametrize("which", ["written", "built-in"])
def test_the_frames_show_the_script(example, which):
    """A red pixel where the script puts the red circle, at the seconds it says, and none elsewhere: in the example
    written now, and in the copy the built-in gallery holds."""
    path = example if which == "written" else BUILT_IN
    frames = {f.t: np.asarray(f.image).astype(int) for f in video.sample(path, every=0.5)}
    red = {t for t, px in frames.items() if ((px[..., 0] > 180) & (px[..., 1] < 80) & (px[..., 2] < 80)).sum() > 50}
    truth = {t for t in frames for s, e in video.on_screen("red circle") if s <= t < e}
    assert red == truth and video.on_screen("red circle") == [(1.0, 5.0), (10.0, 14.0)]


def test_a_cut_is_kept_between_the_clocks_frames(tmp_path):
    path = tmp_path / "cut.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=10)
        stream.width = stream.height = 64
        stream.pix_fmt = "yuv420p"
        for i in range(30):  # dark for 1.3 s, then light: a cut between the frames at 1 s and 2 s
            grey = np.full((64, 64, 3), 20 if i < 13 else 230, np.uint8)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(grey, format="rgb24")))
        out.mux(stream.encode())
    frames = list(video.sample(path))
    assert [(f.t, f.cut) for f in frames] == [(0.0, False), (1.0, False), (1.3, True), (2.0, False)]
    assert [f.t for f in video.sample(path, cut_threshold=None)] == [0.0, 1.0, 2.0]


@pytest.mark.parametrize("make, says", [
    (lambda p, ex: p.write_bytes(b""), r"is empty \(0 bytes\)"),
    (lambda p, ex: p.write_bytes(np.random.default_rng(0).bytes(5000)), "is not a video FFmpeg can read"),
    (lambda p, ex: p.write_text("hello, not a video"), "is not a video FFmpeg can read"),
    (lambda p, ex: p.write_bytes(ex.read_bytes()[:200]), "has no video stream.*damaged or cut off"),
])
def test_files_that_are_no_video_say_what_is_wrong(tmp_path, example, make, says):
    path = tmp_path / "clip.mp4"
    make(path, example)
    with pytest.raises(VideoError, match=says) as err:
        list(video.sample(path))
    assert str(err.value).startswith("clip.mp4 ")  # the file's name, never the server's path


def test_audio_only_is_refused_by_name(tmp_path):
    path = tmp_path / "talk.m4a"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("aac", rate=44100)
        for i in range(20):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 44100, i * 1024
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    with pytest.raises(VideoError, match="talk.m4a has audio only"):
        video.probe(path)


def test_a_cut_off_copy_gives_its_first_seconds_then_says_it_is_cut_off(tmp_path, example):
    path = tmp_path / "partial.mp4"
    path.write_bytes(example.read_bytes()[: example.stat().st_size * 6 // 10])
    seen = []
    with pytest.raises(VideoError, match="partial.mp4 is (damaged|cut off)"):
        for frame in video.sample(path):
            seen.append(frame.t)
    assert seen[:5] == [0.0, 1.0, 2.0, 3.0, 4.0] and len(seen) < 15


@pytest.mark.parametrize("limits, says", [
    (Limits(max_seconds=10), "lasts 0 minutes; videos up to 0 minutes"),
    (Limits(max_pixels=100 * 100), "is 256x256; videos up to 0.0 megapixels"),
    (Limits(max_frames=5), "more than 5 frames"),
])
def test_limits_bound_what_a_video_can_cost(example, limits, says):
    with pytest.raises(VideoError, match=says):
        list(video.sample(example, limits=limits))


def test_every_must_be_a_positive_number(example):
    for bad in (0, -1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="positive number of seconds"):
            list(video.sample(example, every=bad))


def test_matching_frames_merge_into_moments_best_first():
    times = np.arange(12.0)
    scores = np.array([.2, .2, .6, .7, .6, .2, .2, .2, .9, .2, .8, .2])  # 2-4 together; 8 and 10 with a gap
    found = video.moments(times, scores)
    assert [(m.start, m.end, m.best) for m in found] == [(8.0, 9.0, 8.0), (10.0, 11.0, 10.0), (2.0, 5.0, 3.0)]
    assert found[0].label() == "00:08-00:09" and video.moments(times, scores, threshold=0.95) == []
    assert video.moments([], []) == [] and video.iou((1, 5), (3, 7)) == pytest.approx(2 / 6)


def test_a_moment_prints_minutes_and_seconds():
    assert video.Moment(65.0, 3725.0, 70.0, 0.5).label() == "01:05-62:05"
