"""How fast mbm samples a video: a 1080p H.264 clip of 60 s at 30 frames a second, one frame kept a second.

    python benchmarks/bench_video.py [--seconds 60] [--repeats 3]

It writes the clip once (moving shapes of the synthetic world on a gradient, x264 `veryfast`, into a temporary
folder), then times `mbm.video.sample(path, every=1)` end to end: every frame decoded (FFmpeg's threads), the kept
ones converted to 256-px RGB, the cuts looked for. Reported: wall seconds, frames decoded per second and the
real-time factor (seconds of video per second of work), median of the repeats; also with the cut detector off,
to show what it costs.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _synthetic import cpu_name  # noqa: E402


def write_clip(path: Path, seconds: float, fps: int = 30, size: tuple[int, int] = (1920, 1080)) -> Path:
    import av
    from PIL import Image, ImageDraw
    w, h = size
    ramp = np.linspace(40, 200, w, dtype=np.float32)[None, :, None].repeat(h, 0).repeat(3, 2).astype(np.uint8)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"preset": "veryfast", "crf": "23"}
        for i in range(round(seconds * fps)):
            img = Image.fromarray(ramp)
            draw = ImageDraw.Draw(img)
            t = i / fps
            x = int((t * 97) % w)
            draw.ellipse((x, 300, x + 240, 540), fill=(220, 30, 30))
            draw.rectangle((w - x - 200, 600, w - x, 800), fill=(30, 60, 220))
            if int(t) % 10 == 5:  # a cut to another picture for a second, every ten
                draw.rectangle((0, 0, w, h), fill=(240, 240, 240))
            out.mux(stream.encode(av.VideoFrame.from_image(img)))
        out.mux(stream.encode())
    return path


def run(path: Path, seconds: float, **kwargs) -> dict:
    from mbm import video
    t0 = time.perf_counter()
    frames = sum(1 for _ in video.sample(path, every=1.0, **kwargs))
    wall = time.perf_counter() - t0
    return {"wall": wall, "kept": frames}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    import av

    from mbm import video
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        clip = write_clip(Path(tmp) / "clip.mp4", args.seconds)
        made = time.perf_counter() - t0
        info = video.probe(clip)
        n_frames = round(info.duration * info.fps)
        print(f"machine: {cpu_name()}, {os.cpu_count()} CPU threads, Python {platform.python_version()}, "
              f"PyAV {av.__version__} (FFmpeg {av.ffmpeg_version_info})")
        print(f"clip: {info.width}x{info.height} {info.codec}, {info.duration:.0f} s at {info.fps:g} fps "
              f"({n_frames} frames, {clip.stat().st_size / 1e6:.1f} MB), written in {made:.0f} s; "
              f"load average {os.getloadavg()[0]:.2f}\n")
        print("| sampling, one frame a second | wall (s) | frames decoded / s | real-time factor | kept |\n"
              "|---|---:|---:|---:|---:|")
        for name, kwargs in (("as the gallery does (threads, cuts)", {}),
                             ("no cut detector", {"cut_threshold": None})):
            runs = [run(clip, info.duration, **kwargs) for _ in range(args.repeats)]
            wall = statistics.median(r["wall"] for r in runs)
            print(f"| {name} | {wall:.2f} | {n_frames / wall:.0f} | {info.duration / wall:.1f}x | "
                  f"{runs[0]['kept']} |")
        print(f"\nafter: load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
