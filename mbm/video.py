"""Video: open a file with PyAV (FFmpeg's libraries, bundled in the `av` wheel), sample frames, never hold the video.

`sample(path)` yields `Frame(t, image)` every `every` seconds (default 1) plus the frames where the picture jumps
(a cut: the mean change of a small grey copy against the last kept frame), decoded on FFmpeg's own threads and
converted to RGB at a reduced size (`side`, default 256 px on the long side) only for the frames it keeps, so a
1080p hour costs what its decoding costs and memory holds one frame. Limits on duration, resolution and frame
count bound what a visitor's upload can cost; a file that is not a usable video (damaged, truncated, audio only,
zero length, an unknown format) is a `VideoError` that names it and says what is wrong.

`write_example(path)` writes the built-in example: objects of the shapes world entering, leaving and changing
colour, with its ground-truth script (`EXAMPLE_SCRIPT`), so tests can check which seconds "a red circle" is on.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from mbm.errors import InputError

VIDEO_SUFFIXES = frozenset({".mp4", ".webm", ".mov", ".mkv", ".m4v", ".avi"})  # and an animated .gif: is_video


class VideoError(InputError):
    """A file that cannot be used as a video; the message names the file and what is wrong with it."""


@dataclass(frozen=True)
class Limits:
    max_seconds: float = 3 * 3600.0  # longer videos are refused, not sampled in part
    max_pixels: int = 4096 * 2160  # per frame (4K); beyond it decoding one frame costs too much
    max_frames: int = 20_000  # sampled frames per video (an hour at 1 per second, and the cuts)


@dataclass(frozen=True)
class VideoInfo:
    duration: float  # seconds
    width: int
    height: int
    fps: float  # average frames per second (0 if the container does not say)
    codec: str


@dataclass(frozen=True)
class Frame:
    t: float  # seconds from the start
    image: Image.Image  # RGB, at most `side` px on its long side
    cut: bool = False  # kept because the picture jumped, not because of the clock


def is_video(path: str | Path) -> bool:
    """Whether a gallery file is a video: a video suffix, or a GIF with more than one frame (a still GIF, or one
    Pillow cannot open, stays an image, as it always was)."""
    suffix = Path(path).suffix.lower()
    if suffix != ".gif":
        return suffix in VIDEO_SUFFIXES
    try:
        with Image.open(path) as im:
            return getattr(im, "n_frames", 1) > 1  # counts the frames without decoding them
    except Exception:  # not a GIF after all, damaged, a bomb: the image path says what is wrong with it
        return False


def _open(path: str | Path):
    import av
    path = Path(path)
    name = path.name
    try:
        size = path.stat().st_size
    except OSError as e:
        raise VideoError(f"{name} cannot be read: {e.strerror or e}") from None
    if size == 0:
        raise VideoError(f"{name} is empty (0 bytes): it holds no video.")
    try:
        container = av.open(str(path), metadata_errors="ignore")
    except (av.error.InvalidDataError, av.error.EOFError) as e:
        raise VideoError(f"{name} is not a video FFmpeg can read: it is damaged, or in a format it does not "
                         f"know ({_why(e)}).") from None
    except av.FFmpegError as e:
        raise VideoError(f"{name} could not be opened as a video ({_why(e)}).") from None
    if not container.streams.video:
        kind = "audio only" if container.streams.audio else "no video stream"
        container.close()
        hint = "" if kind == "audio only" else " (if it is a video, the file is damaged or cut off)"
        raise VideoError(f"{name} has {kind}: there are no pictures to search{hint}.")
    return container


def _why(e: Exception) -> str:
    return (getattr(e, "strerror", None) or str(e) or type(e).__name__).strip().splitlines()[0][:120]


def probe(path: str | Path, limits: Limits = Limits()) -> VideoInfo:
    """Duration, size, frame rate and codec of a video, checked against `limits`; reads only the headers."""
    container = _open(path)
    try:
        return _info(container, Path(path).name, limits)
    finally:
        container.close()


def _info(container, name: str, limits: Limits) -> VideoInfo:
    stream = container.streams.video[0]
    duration = _duration(container, stream)
    width, height = stream.codec_context.width, stream.codec_context.height
    if not width or not height:
        raise VideoError(f"{name}'s video stream has no picture size: the file is damaged.")
    if width * height > limits.max_pixels:
        raise VideoError(f"{name} is {width}x{height}; videos up to {limits.max_pixels / 1e6:.1f} megapixels a "
                         "frame are accepted. Scale it down first.")
    if duration > limits.max_seconds:
        raise VideoError(f"{name} lasts {duration / 60:.0f} minutes; videos up to {limits.max_seconds / 60:.0f} "
                         "minutes are accepted. Cut it first.")
    fps = float(stream.average_rate) if stream.average_rate else 0.0
    return VideoInfo(duration, width, height, fps, stream.codec_context.name)


def _duration(container, stream) -> float:
    if stream.duration is not None and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000  # av.time_base
    return 0.0


def sample(path: str | Path, every: float = 1.0, side: int = 256, cut_threshold: float | None = 0.12,
           limits: Limits = Limits()) -> Iterator[Frame]:
    """Frames of a video: the first, then one every `every` seconds, plus the frames where the picture jumps.

    Args:
        every: seconds between clock frames.
        side: the long side of the RGB images yielded (the video is decoded at its size, converted at this one).
        cut_threshold: mean absolute change (0-1) of a 32x32 grey copy, against the last kept frame, that makes a
            frame a cut; None keeps only the clock's frames.
    Raises:
        VideoError: not a usable video, or beyond `limits` (before any frame); or, after the frames before the
            damage were yielded, a video cut off or damaged part way (a caller may keep what came).
    """
    if every <= 0 or not math.isfinite(every):
        raise InputError(f"every must be a positive number of seconds, not {every!r}")
    import av
    container = _open(path)
    name = Path(path).name
    try:
        info = _info(container, name, limits)
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"  # frame and slice threads: decoding is most of the work
        scale = min(1.0, side / max(info.width, info.height))
        size = (max(1, round(info.width * scale)), max(1, round(info.height * scale)))
        kept, next_t, last_grey, t = 0, 0.0, None, 0.0
        try:
            for frame in container.decode(stream):
                t = float(frame.pts * stream.time_base) if frame.pts is not None else kept * every
                grey = _grey(frame) if cut_threshold is not None else None
                clock = t >= next_t - 1e-6
                cut = (not clock and last_grey is not None and grey is not None
                       and float(np.abs(grey - last_grey).mean()) > cut_threshold)
                if not (clock or cut):
                    continue
                if kept >= limits.max_frames:
                    raise VideoError(f"{name} gives more than {limits.max_frames:,} frames at one every {every:g} s; "
                                     "sample it more sparsely.")
                image = frame.to_image(width=size[0], height=size[1]).convert("RGB")
                yield Frame(round(t, 3), image, cut=cut)
                kept, last_grey = kept + 1, grey
                if clock:
                    next_t = (math.floor(t / every + 1e-6) + 1) * every
        except (av.error.InvalidDataError, av.error.EOFError, av.error.ValueError) as e:
            raise VideoError(f"{name} is damaged after {t:.0f} s ({_why(e)}); the frames before it were read.") \
                from None
        if kept == 0:
            raise VideoError(f"{name} holds no frames (zero length or damaged).")
        if info.duration and t < info.duration - max(2 * every, 1.0):
            raise VideoError(f"{name} is cut off at {t:.0f} s of its {info.duration:.0f} s: the rest is missing "
                             "(an incomplete copy?); the frames before it were read.")
    finally:
        container.close()


def _grey(frame) -> np.ndarray:
    """A 32x32 grey copy in 0-1, straight from the decoder's planes (cheap next to an RGB conversion)."""
    small = frame.reformat(width=32, height=32, format="gray")
    return small.to_ndarray().astype(np.float32) / 255.0


@dataclass(frozen=True)
class Appearance:
    """One object of the example video: on screen from `start` to `end` seconds, moving from `x0` to `x1`
    (fractions of the width) at height `y`."""
    colour: str
    shape: str
    start: float
    end: float
    x0: float
    x1: float
    y: float

    @property
    def label(self) -> str:
        return f"{self.colour} {self.shape}"


# A red circle slides in and out twice, a blue square stays a while, and a star turns from green to yellow.
EXAMPLE_SCRIPT = (
    Appearance("red", "circle", 1.0, 5.0, 0.1, 0.45, 0.3),
    Appearance("blue", "square", 3.0, 9.0, 0.75, 0.7, 0.7),
    Appearance("green", "star", 6.0, 8.5, 0.3, 0.3, 0.72),
    Appearance("yellow", "star", 8.5, 11.0, 0.3, 0.35, 0.72),
    Appearance("red", "circle", 10.0, 14.0, 0.8, 0.55, 0.3),
)
EXAMPLE_SECONDS = 15.0


def example_frame(t: float, size: int = 256, script: tuple[Appearance, ...] = EXAMPLE_SCRIPT) -> Image.Image:
    """The example video's picture at `t` seconds: the script's objects, large, on a mid-grey stage (the shapes
    world's own tones and sizes, so its model sees what it was trained on), drawn at twice the size and reduced."""
    import random

    from PIL import ImageDraw

    from mbm.data.backgrounds import draw_shape
    from mbm.data.shapes import COLOURS, SIZES
    s = 2 * size
    image = Image.new("RGB", (s, s), (140, 140, 136))
    draw = ImageDraw.Draw(image)
    for a in script:
        if a.start <= t < a.end:
            x = a.x0 + (a.x1 - a.x0) * (t - a.start) / (a.end - a.start)
            draw_shape(draw, a.shape, x * s, a.y * s, SIZES["large"] / 2 * s, COLOURS[a.colour], "filled", 0.0,
                       random.Random(0))
    return image.resize((size, size), Image.Resampling.BOX)


def write_example(path: str | Path, fps: int = 12, size: int = 256, seconds: float = EXAMPLE_SECONDS) -> Path:
    """Write the example video (H.264 in MP4, `fps` frames a second) of `EXAMPLE_SCRIPT`; returns its path."""
    import av
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # faststart: the index first, so a browser plays it while it loads and a cut-off copy keeps its first seconds
    with av.open(str(path), "w", format="mp4", options={"movflags": "+faststart"}) as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "28", "preset": "veryslow", "g": str(fps * 2)}  # small file, a keyframe each 2 s
        for i in range(round(seconds * fps)):
            frame = av.VideoFrame.from_image(example_frame(i / fps, size))
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return path


def on_screen(label: str, script: tuple[Appearance, ...] = EXAMPLE_SCRIPT) -> list[tuple[float, float]]:
    """The example's ground truth: the spans (start, end) in seconds when an object `label` is on screen."""
    spans = sorted((a.start, a.end) for a in script if a.label == label)
    merged: list[tuple[float, float]] = []
    for s, e in spans:
        if merged and s <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], e))
        else:
            merged.append((s, e))
    return merged


@dataclass(frozen=True)
class Moment:
    """A span of a video that matches a query: from `start` to `end` seconds, best at `best` with `score`."""
    start: float
    end: float
    best: float
    score: float

    def label(self) -> str:
        """`mm:ss-mm:ss`, as the CLI prints a hit."""
        clock = lambda s: f"{int(s) // 60:02d}:{int(s) % 60:02d}"
        return f"{clock(self.start)}-{clock(self.end)}"


def moments(times: np.ndarray, scores: np.ndarray, every: float = 1.0, share: float = 0.5,
            threshold: float | None = None) -> list[Moment]:
    """The spans of one video's sampled frames that match a query, best first.

    A frame matches when its score stands out from the video's own run of scores: at least `share` of the way
    from their lower quartile (what the video looks like to this query when the thing is not there; a median is a
    matching frame when the thing is on screen most of the time) to their best (and at least `threshold`, if given).
    Matching frames no more than 1.5 `every` apart merge into one span, which ends one
    `every` after its last frame (the frame stands for the seconds until the next one).
    """
    times, scores = np.asarray(times, float), np.asarray(scores, float)
    if len(times) == 0:
        return []
    order = np.argsort(times)
    times, scores = times[order], scores[order]
    base = np.percentile(scores, 25)
    floor = base + share * (scores.max() - base)
    if threshold is not None:
        floor = max(floor, threshold)
    spans: list[list[int]] = []
    for i in np.flatnonzero(scores >= floor - 1e-9):
        if spans and times[i] - times[spans[-1][-1]] <= 1.5 * every:
            spans[-1].append(i)
        else:
            spans.append([i])
    out = []
    for span in spans:
        best = max(span, key=lambda i: scores[i])
        out.append(Moment(float(times[span[0]]), float(times[span[-1]] + every), float(times[best]),
                          float(scores[best])))
    return sorted(out, key=lambda m: -m.score)


def iou(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Intersection over union of two time spans."""
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = max(a[1], b[1]) - min(a[0], b[0])
    return inter / union if union > 0 else 0.0
