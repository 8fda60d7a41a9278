"""Short clips cut from a video around a moment, for a page to play: PyAV seeks to the keyframe before the start,
decodes from there, and re-encodes only the seconds wanted, at a reduced size, as H.264 in MP4 with its index first
(what every browser plays as it loads). One frame is held at a time; the clip lands whole or not at all."""

from __future__ import annotations

import os
import tempfile
from fractions import Fraction
from pathlib import Path

from mbm import video

MAX_CLIP_SECONDS = 30.0  # a clip never runs longer, whatever the moment's span


def cut_clip(path: str | Path, start: float, end: float, out: str | Path, margin: float = 1.0, side: int = 360,
             limits: video.Limits | None = None) -> Path:
    """Write the seconds `start - margin` to `end + margin` of a video (at most `MAX_CLIP_SECONDS`) to `out`.

    Args:
        path: the video.
        start, end: the moment, in seconds.
        out: the MP4 to write (replaced atomically).
        margin: seconds of context before and after.
        side: the clip's long side in pixels (never larger than the video's).
    Raises:
        VideoError: not a usable video, beyond `limits`, or damaged within the seconds asked for.
    """
    import av
    info = video.probe(path, limits or video.Limits())
    lo = max(0.0, float(start) - margin)
    hi = min(float(end) + margin, lo + MAX_CLIP_SECONDS, info.duration or float("inf"))
    scale = min(1.0, side / max(info.width, info.height))
    size = (max(2, round(info.width * scale / 2) * 2), max(2, round(info.height * scale / 2) * 2))  # even: yuv420p
    fps = max(1, min(30, round(info.fps or 25)))
    out = Path(out)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".mp4")
    os.close(fd)
    try:
        with av.open(str(path), metadata_errors="ignore") as src, \
                av.open(tmp, "w", format="mp4", options={"movflags": "+faststart"}) as dst:
            written = _copy_span(src, dst, lo, hi, size, fps)
        if not written:
            raise video.VideoError(f"{Path(path).name} has no frames between {lo:.0f} s and {hi:.0f} s.")
        os.replace(tmp, out)
    except av.FFmpegError as e:
        raise video.VideoError(f"{Path(path).name} could not be cut ({video._why(e)}).") from None
    finally:
        Path(tmp).unlink(missing_ok=True)
    return out


def _copy_span(src, dst, lo: float, hi: float, size: tuple[int, int], fps: int) -> int:
    """Decode `src` from the keyframe before `lo` and encode its frames from `lo` to `hi`; returns how many."""
    stream = src.streams.video[0]
    stream.thread_type = "AUTO"
    encoder = dst.add_stream("libx264", rate=fps)
    encoder.width, encoder.height = size
    encoder.pix_fmt = "yuv420p"
    encoder.options = {"crf": "26", "preset": "veryfast"}
    if lo > 0 and stream.time_base:
        src.seek(int(lo / stream.time_base), stream=stream, backward=True)  # the keyframe at or before lo
    written, last = 0, -1
    for frame in src.decode(stream):
        t = frame.time
        if t is None or t < lo - 1e-6:
            continue
        if t > hi:
            break
        pts = round((t - lo) * fps)
        if pts <= last:  # a source faster than the clip's rate: keep one frame per tick
            continue
        picture = frame.reformat(width=size[0], height=size[1], format="yuv420p")
        picture.pts, picture.time_base, last = pts, Fraction(1, fps), pts
        dst.mux(encoder.encode(picture))
        written += 1
    dst.mux(encoder.encode())
    return written
