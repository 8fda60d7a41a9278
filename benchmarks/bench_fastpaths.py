"""The encoder's fast paths against the plain one: images/s and texts/s on pre-made tensors (issue 7, "Speed").

    python benchmarks/bench_fastpaths.py [--models mbm-shapes,ViT-B-32] [--paths eager,channels_last,bf16,compile,onnx]
                                         [--batches 1,16,64] [--repeats 10] [--cell-seconds 3] [--device auto]
                                         [--threads N] [--fma-units 2] [--ghz G] [--onnx-cache DIR]

Each path is an `Encoder` over its own copy of the same weights, timed through the encoder's own tower calls
(`_image` / `_text`: input layout and dtype conversion, the runner, the host-to-device copy included; decoding,
resizing and tokenising excluded, as in bench_encoder.py, whose inputs, FLOP counts, peaks and timing sync this
script imports):

- eager: the plain path (fp32, contiguous, the model's own methods; fp16 autocast on CUDA);
- channels_last: NHWC weights and inputs (mbm's default for convolutional towers on the CPU);
- bf16: `precision="bf16"` (on the CPU a bf16 copy of the model; skipped where the CPU has no bf16 instructions);
- compile: `torch.compile(dynamic=True)` of both towers (on the default memory format), set up here: mbm itself
  does not compile, as on the 2-core CPU it was no faster than channels_last for images, 1.16x eager for texts,
  and each new batch size took 90-115 s to compile; the first call (the compilation) is reported apart;
- onnx: the ONNX Runtime backend (exported once, to a temp folder unless --onnx-cache; export time reported).

The paths of one model, tower and batch size are timed round-robin (one call each, in turn, until --repeats
rounds or --cell-seconds), so a noisy neighbour slows them alike and the ratios hold. Medians with min-max;
each path's best batch set against eager's best, against the CPU's FP32 peak, and its lowest cosine to eager's
embeddings over that batch (accuracy at a glance).
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_encoder, beside this file
from bench_encoder import (  # noqa: E402
    MIN_RUNS,
    cpu_facts,
    gflop_per_sample,
    inputs,
    load,
    matmul_peak,
    parse_timing,
    share,
    sync,
    theoretical_peak,
    timing_parser,
)

from mbm.models import Encoder  # noqa: E402  (bench_encoder put the checkout on sys.path)
from mbm.models._device import cpu_has_bf16  # noqa: E402
from mbm.models.encoder import Runner  # noqa: E402

PATHS = ("eager", "channels_last", "bf16", "compile", "onnx")


@dataclass
class Cell:
    model: str
    tower: str  # "images" or "texts"
    path: str
    batch: int
    times: list[float] = field(default_factory=list)  # seconds per batch, one per round
    first: float = 0.0  # seconds of the warm-up call (for compile: the compilation)
    cosine: float = 1.0  # lowest cosine of a row to eager's embedding of the same input

    @property
    def rate(self) -> float:  # samples per second at the median time
        return self.batch / statistics.median(self.times)


def compiled(enc: Encoder) -> Encoder:
    """`enc` running `torch.compile`d towers (dynamic shapes: one compilation for every batch size above 1)."""
    image = torch.compile(enc.model.encode_image, dynamic=True)
    text = torch.compile(enc.model.encode_text, dynamic=True)
    fmt = torch.channels_last if enc.channels_last else torch.contiguous_format
    enc.use_runner(Runner(image=lambda x: image(enc._to_device(x).contiguous(memory_format=fmt)),
                          text=lambda t: text(enc._to_device(t)), what="torch.compile"))
    return enc


def variants(base: Encoder, paths: list[str], onnx_cache: Path) -> tuple[dict[str, Encoder], list[str]]:
    """One encoder per path over a copy of `base`'s weights, and notes on paths skipped or their setup time."""
    made, notes = {}, []

    def encoder(**kwargs) -> Encoder:
        return Encoder(copy.deepcopy(base.model), base.preprocess, base.tokenizer, name=base.name, device=base.device,
                       **{"precision": base.precision, "channels_last": False, **kwargs})
    for path in paths:
        if path == "eager":
            made[path] = encoder()
        elif path == "channels_last":
            made[path] = encoder(channels_last=True)
        elif path == "bf16":
            if base.device.type == "cpu" and not cpu_has_bf16():
                notes.append("bf16: skipped, this CPU has no bf16 instructions")
                continue
            made[path] = encoder(precision="bf16", channels_last=None)
        elif path == "compile":
            made[path] = compiled(encoder(channels_last=None))
        elif path == "onnx":
            try:
                from mbm.models._onnx import onnx_runner
                enc, start = encoder(precision="fp32"), time.perf_counter()
                enc.use_runner(onnx_runner(enc, onnx_cache), backend="onnx")
            except ImportError as e:
                notes.append(f"onnx: skipped, {e}")
                continue
            notes.append(f"onnx: sessions ready in {time.perf_counter() - start:.1f} s (export included unless cached "
                         f"in {onnx_cache}); {enc.runner.what}")
            made[path] = enc
        else:
            raise SystemExit(f"unknown path {path!r}; choose from {PATHS}")
    return made, notes


def call(enc: Encoder, tower: str, x: torch.Tensor) -> torch.Tensor:
    """One batch through one tower the way the encoder runs it, in its inference mode and autocast."""
    with torch.inference_mode(), enc._autocast():
        return enc._image(x) if tower == "images" else enc._text(x)


def time_cells(encs: dict[str, Encoder], model: str, tower: str, x: torch.Tensor,
               args: argparse.Namespace) -> list[Cell]:
    """Warm each path up once (timed apart), then time them round-robin."""
    cells, ref = {}, None
    for path, enc in encs.items():
        start = time.perf_counter()
        out = call(enc, tower, x)
        sync(enc.device)
        cell = cells[path] = Cell(model, tower, path, len(x), first=time.perf_counter() - start)
        out = F.normalize(out.float(), dim=-1).cpu()
        ref = out if ref is None else ref
        cell.cosine = float((out * ref).sum(-1).min())
    start = time.perf_counter()
    while True:
        for path, enc in encs.items():
            t0 = time.perf_counter()
            call(enc, tower, x)
            sync(enc.device)
            cells[path].times.append(time.perf_counter() - t0)
        runs = len(cells[next(iter(cells))].times)
        if runs >= args.repeats or (runs >= MIN_RUNS and time.perf_counter() - start > args.cell_seconds):
            return list(cells.values())


def bench_model(name: str, args: argparse.Namespace, device: torch.device) -> tuple[list[Cell], dict, list[str]]:
    base = load(name, device)
    g_img, g_txt = gflop_per_sample(base, inputs(base, 1)[1].to(device))
    print(f"{base!r}: {g_img:.3f} GFLOP per image, {g_txt:.3f} per text", flush=True)
    encs, notes = variants(base, args.paths, args.onnx_cache)
    cells = []
    for tower in ("images", "texts"):
        for batch in args.batches:
            x = inputs(base, batch)[tower == "texts"]
            cells += time_cells(encs, name, tower, x, args)
            print(f"  {tower} batch {batch}: done", flush=True)
    return cells, {"images": g_img, "texts": g_txt}, notes


def report(cells: list[Cell], gflop: dict, peak: float | None) -> list[str]:
    """Every cell, then each path's best batch against eager's best batch."""
    lines = ["| model | tower | path | batch | ms/batch (min-max) | per s | x eager | % peak | min cos "
             "| first call s |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    eager = {(c.model, c.tower, c.batch): c.rate for c in cells if c.path == "eager"}
    for c in cells:
        ms = [t * 1000 for t in c.times]
        base = eager.get((c.model, c.tower, c.batch))
        lines.append(f"| {c.model} | {c.tower} | {c.path} | {c.batch} | {statistics.median(ms):.1f} "
                     f"({min(ms):.1f}-{max(ms):.1f}) | {c.rate:.1f} | {c.rate / base:.2f}x | "
                     f"{share(c.rate * gflop[c.model, c.tower], peak)} | {c.cosine:.5f} | {c.first:.2f} |"
                     if base else f"| {c.model} | {c.tower} | {c.path} | {c.batch} | ... |")
    lines += ["", "| model | tower | path | best batch | per s | x eager (best vs best) | GFLOP/s | % of FP32 peak |"
              " min cos |", "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    best: dict[tuple[str, str, str], Cell] = {}
    for c in cells:
        key = (c.model, c.tower, c.path)
        if key not in best or c.rate > best[key].rate:
            best[key] = c
    for (model, tower, path), c in best.items():
        top = best.get((model, tower, "eager"))
        g = c.rate * gflop[model, tower]
        lines.append(f"| {model} | {tower} | {path} | {c.batch} | {c.rate:.1f} | "
                     f"{f'{c.rate / top.rate:.2f}x' if top else '-'} | {g:.1f} | {share(g, peak)} | "
                     f"{min(x.cosine for x in cells if (x.model, x.tower, x.path) == (model, tower, path)):.5f} |")
    return lines


def main() -> None:
    parser = timing_parser(__doc__, repeats=10, batches="1,16,64")
    parser.add_argument("--paths", default=",".join(PATHS))
    parser.add_argument("--onnx-cache", type=Path, help="where the ONNX files go (default: a temp folder, so "
                        "the export is timed)")
    args, device = parse_timing(parser)
    args.paths = args.paths.split(",")
    facts = cpu_facts()
    print(f"machine: {facts['name']}, {os.cpu_count()} cores, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), bf16 instructions {cpu_has_bf16()}, "
          f"Python {platform.python_version()}, load average {os.getloadavg()[0]:.2f} at start")
    if device.type == "cuda":
        peak, how = None, f"none computed for {torch.cuda.get_device_name(device)}"
    else:
        peak, _, how = theoretical_peak(facts, torch.get_num_threads(), args.fma_units, args.ghz)
    print(f"theoretical FP32 peak: {how}")
    mm, how_mm = matmul_peak(device)
    print(f"measured fp32/fp16 matmul: {mm:.1f} GFLOP/s (by n: {how_mm})")
    with tempfile.TemporaryDirectory() as tmp:
        args.onnx_cache = args.onnx_cache or Path(tmp)
        cells, gflop, notes = [], {}, []
        for name in args.models.split(","):
            got, g, n = bench_model(name, args, device)
            cells += got
            gflop.update({(name, tower): v for tower, v in g.items()})
            notes += [f"{name} {line}" for line in n]
    print("\n" + "\n".join(report(cells, gflop, peak)))
    print("\n" + "\n".join(f"- {line}" for line in notes))
    print(f"\nload average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
