"""Indexing a folder of JPEGs: `gallery.sync()` against its ceilings and a naive loop; incremental re-syncs.

    python benchmarks/bench_sync.py [--n 2000] [--models mbm-shapes,ViT-B-32] [--naive-n 300]
                                    [--folder DIR] [--queries 50] [--device auto] [--precision auto]
                                    [--no-incremental]

Writes `n` JPEG scenes of varied sizes (320-2000 px, made once and reused from `--folder`). Then, per model
and all in one run (issue 7, "Speed"):
- encoder ceiling: `Encoder.encode_pixels` on pre-made tensors at the batch size sync() uses (no file is read);
- input ceiling: the same `sync()` with a stand-in encoder that returns vectors without computing anything,
  so what is timed is reading, hashing, decoding, thumbnailing, transforming and committing;
- combined ceiling: both kinds of work on the same cores with no idle time, 1 / (1/encoder + 1/input);
- naive loop: what most CLIP demos do, for the first `--naive-n` files: open, convert, transform, encode one
  image at a time (its rate does not depend on how many files it sees);
- pipeline: `sync()` of the whole folder into a fresh store: its image phase (what the ceilings and the naive
  loop do) and, in the last column, the whole sync (which also embeds each file's caption and builds the index).
`--precision bf16` runs the model (not the naive loop, which stays what demos do) as mbm's bf16 fast path.
For the first model it then times a re-sync with nothing changed, after rewriting 10 files and after
deleting 10, and `Engine.search` on the result (p50/p95). `ViT-B-32` is randomly initialised (no download;
same FLOPs as the real one).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _synthetic import machine  # noqa: E402
from bench_encoder import load, time_runs  # noqa: E402

from mbm.data.shapes import COLOURS, SHAPES, make_scene, render  # noqa: E402
from mbm.engine import Engine, EngineConfig  # noqa: E402
from mbm.gallery import Gallery  # noqa: E402
from mbm.models import Encoder, resolve_device  # noqa: E402


def make_folder(folder: Path, n: int) -> None:
    """`n` JPEGs, 320-2000 px on a side, reused when the folder already holds them."""
    done = {p.name for p in folder.glob("*.jpg")} if folder.is_dir() else set()
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        name = f"scene-{i:05d}.jpg"
        if name not in done:
            side = 320 + (i * 7919) % 1681
            render(make_scene("test", i), size=side, supersample=1).save(folder / name, quality=88)


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


class NoModel(Encoder):
    """`enc` with the model taken out: `encode_pixels` returns fixed unit rows at once. A sync with it times
    everything but the model."""

    def __init__(self, enc: Encoder):
        self.__dict__.update(enc.__dict__)
        self._row = np.eye(1, enc.embed_dim, dtype=np.float32)

    def encode_pixels(self, pixels: torch.Tensor, batch_size: int | None = None) -> np.ndarray:
        return np.repeat(self._row, len(pixels), axis=0)


def encoder_ceiling(enc: Encoder) -> float:
    """Images/s of `encode_pixels` on a pre-made batch of random pixels, at the batch size sync() uses
    (median of up to 10 runs)."""
    pixels = torch.randn(enc.image_batch, 3, enc.image_size, enc.image_size)
    times = time_runs(lambda: enc.encode_pixels(pixels), enc.device, runs=10, budget=20.0)
    return enc.image_batch / statistics.median(times)


def naive_rate(enc: Encoder, files: list[Path]) -> float:
    """Images/s of the usual demo loop: open, convert, transform and encode one file at a time."""
    def encode(path: Path) -> np.ndarray:
        with torch.inference_mode():
            x = enc.preprocess(Image.open(path).convert("RGB")).unsqueeze(0)  # (1, 3, S, S)
            feats = enc.model.encode_image(x.to(enc.device))
            return torch.nn.functional.normalize(feats.float(), dim=-1).cpu().numpy()
    encode(files[0])  # warm-up
    return len(files) / timed(lambda: [encode(path) for path in files])[1]


def sync_rate(enc: Encoder, folder: Path, work: Path, name: str) -> tuple[Gallery, float, float]:
    """A fresh store for `folder`, synced with `enc`: the gallery, the images/s of its image phase (from the
    start until the last image batch is committed) and of the whole sync (captions and the index included)."""
    gallery = Gallery(folder, enc, store=work / name)
    marks = {}
    start = time.perf_counter()
    report = gallery.sync(progress=lambda done, total, what: marks.__setitem__(what, time.perf_counter()))
    seconds = time.perf_counter() - start
    assert report.encoded == len(list(folder.glob("*.jpg"))), report.summary()
    return gallery, report.encoded / (marks["encoding images"] - start), report.encoded / seconds


def pipeline_row(name: str, enc: Encoder, folder: Path, work: Path, naive_n: int) -> tuple[str, Gallery]:
    files = sorted(folder.glob("*.jpg"))
    ceiling = encoder_ceiling(enc)
    _, inputs, _ = sync_rate(NoModel(enc), folder, work, f"{name}-nomodel")
    naive = naive_rate(enc, files[:naive_n])
    gallery, pipe, whole = sync_rate(enc, folder, work, name)
    combined = 1 / (1 / ceiling + 1 / inputs)
    row = (f"| {name} | {ceiling:.1f} | {inputs:.1f} | {combined:.1f} | {naive:.1f} | **{pipe:.1f}** | "
           f"{pipe / ceiling:.1%} | {pipe / combined:.1%} | {pipe / naive:.2f}x | {whole:.1f} |")
    print(row, flush=True)
    return row, gallery


def incremental(engine: Engine, folder: Path, queries: int) -> None:
    gallery, first = engine.open_gallery(folder)  # cold: a fresh store
    t_first = first.seconds
    again, t_again = timed(gallery.sync)
    files = sorted(folder.glob("*.jpg"))
    for i, path in enumerate(files[:10]):
        render(make_scene("val", i), size=400, supersample=1).save(path, quality=88)
    touched, t_touched = timed(gallery.sync)
    for path in files[10:20]:
        path.unlink()
    deleted, t_deleted = timed(gallery.sync)
    texts = [f"a {c} {s}" for c in COLOURS for s in SHAPES][:queries]
    engine.search(texts[0])  # warm
    lat = sorted(timed(lambda q=q: engine.search(q, k=10))[1] * 1000 for q in texts)

    print("\n| step | seconds | images encoded | note |\n|---|---:|---:|---|")
    print(f"| first sync | {t_first:.2f} | {first.encoded} | {first.encoded / t_first:.1f} images/s |")
    print(f"| re-sync, nothing changed | {t_again:.3f} | {again.encoded} | {t_again / t_first:.2%} of the first |")
    print(f"| re-sync, 10 files rewritten | {t_touched:.3f} | {touched.encoded} | changed={touched.changed} |")
    print(f"| re-sync, 10 files deleted | {t_deleted:.3f} | {deleted.encoded} | removed={deleted.removed}, "
          f"items now {len(gallery)} |")
    p95 = lat[min(len(lat) - 1, int(0.95 * len(lat)))]
    print(f"\ntext query end to end (encode + FAISS + rows), {len(lat)} queries over {len(gallery)} images: "
          f"p50 {statistics.median(lat):.1f} ms, p95 {p95:.1f} ms; index {gallery.index!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--models", default="mbm-shapes,ViT-B-32")
    parser.add_argument("--naive-n", type=int, default=300, help="files the naive loop encodes")
    parser.add_argument("--folder", default=str(Path(tempfile.gettempdir()) / "mbm-bench-jpegs"))
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "fp16", "bf16"))
    parser.add_argument("--no-incremental", action="store_true", help="only the pipelines")
    args = parser.parse_args()
    device = resolve_device(args.device)
    source = Path(args.folder) / str(args.n)
    _, made = timed(lambda: make_folder(source, args.n))
    work = Path(tempfile.mkdtemp(prefix="mbm-bench-"))
    try:
        folder = work / "photos"
        shutil.copytree(source, folder)
        mb = sum(p.stat().st_size for p in folder.glob("*.jpg")) / 2**20
        print(f"machine: {machine()}; device {device}; load average {os.getloadavg()[0]:.2f}")
        print(f"folder: {args.n} JPEGs, {mb:.0f} MB (made in {made:.0f} s); images/s\n")
        print("| model | encoder ceiling | input ceiling | combined ceiling | naive loop | sync(), images | "
              "of encoder | of combined | x naive | sync(), all |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        encoders = {name: load(name, device, args.precision) for name in args.models.split(",")}
        for name, enc in encoders.items():
            _, gallery = pipeline_row(name, enc, folder, work, args.naive_n)
            gallery.close()
        print(f"\nload average {os.getloadavg()[0]:.2f} after the pipelines")
        if args.no_incremental:
            return
        name, enc = next(iter(encoders.items()))
        engine = Engine(EngineConfig(model=name, cache_dir=str(work / "cache"), device=str(device)), encoder=enc)
        incremental(engine, folder, args.queries)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
