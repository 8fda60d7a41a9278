"""The encoder ceiling: images/s and texts/s of the bare model on pre-made tensors (issue 7, "Speed").

    python benchmarks/bench_encoder.py [--models mbm-shapes,ViT-B-32] [--device auto] [--threads N]
                                       [--repeats 20] [--cell-seconds 3] [--batches 1,2,4,8,16,32,64]
                                       [--fma-units 2] [--ghz G] [--extras]

No decoding, resizing or tokenising is timed: random pixels `(B, 3, S, S)` and real tokenised captions
`(B, context)` are made first, then `encode_image` / `encode_text` run under `torch.inference_mode()` and
the `Encoder`'s autocast (fp32 on the CPU, fp16 on CUDA, where inputs are pinned, copied non-blocking and
timed between `torch.cuda.synchronize()` calls). Each cell warms up once, then repeats until `--repeats`
runs or `--cell-seconds` (at least 3 runs), and reports the median. `ViT-B-32` is randomly initialised
(`pretrained=None`, no download): same FLOPs as the real one. FLOPs per sample come from torch's
`FlopCounterMode` (a multiply-add is 2 FLOPs). Achieved GFLOP/s is set against the CPU's theoretical
FP32 peak (cores x FMA units x fp32 SIMD lanes x 2 x clock, from /proc/cpuinfo and lscpu) and against a
measured one: the best median of n x n `torch.mm` (n = 1024, 2048, 4096), timed before and after the encoders.
`--extras` adds, for image towers, the speed-up of channels_last and the effect of turning oneDNN off.
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils import flop_counter

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from mbm.data.shapes import COLOURS, SHAPES  # noqa: E402
from mbm.models import Encoder, create_model, resolve_device, resolve_precision  # noqa: E402

MIN_RUNS = 3


def cpu_facts() -> dict:
    """Model name, flags and clock (MHz) from /proc/cpuinfo, and lscpu's max clock where it reports one."""
    facts = {"name": platform.processor() or platform.machine(), "flags": set(), "mhz": None, "max_mhz": None}
    if Path("/proc/cpuinfo").is_file():
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = (s.strip() for s in line.partition(":"))
            if key == "model name":
                facts["name"] = value
            elif key == "flags":
                facts["flags"] = set(value.split())
            elif key == "cpu MHz" and facts["mhz"] is None:
                facts["mhz"] = float(value)
    if shutil.which("lscpu"):
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("CPU max MHz:"):
                facts["max_mhz"] = float(line.split(":", 1)[1])
    return facts


def theoretical_peak(facts: dict, cores: int, fma_units: int, ghz: float | None) -> tuple[float | None, float, str]:
    """FP32 GFLOP/s = cores x FMA units x fp32 lanes x 2 x GHz; returns it, the clock used (GHz) and how
    the figure was reached."""
    lanes = 16 if "avx512f" in facts["flags"] else 8 if "avx2" in facts["flags"] else 4
    per_fma = 2 if "fma" in facts["flags"] or lanes == 16 else 1  # no FMA: a mul and an add issue separately
    if ghz:
        which = "--ghz"
    elif facts["max_mhz"]:
        ghz, which = facts["max_mhz"] / 1000, "lscpu 'CPU max MHz'"
    elif facts["mhz"]:
        ghz, which = facts["mhz"] / 1000, "/proc/cpuinfo 'cpu MHz'; no max clock reported"
    else:
        return None, 0.0, "none: no clock reported (give --ghz)"
    gflops = cores * fma_units * lanes * per_fma * ghz
    isa = {16: "AVX-512", 8: "AVX2", 4: "SSE"}[lanes]
    return gflops, ghz, (f"{cores} cores x {fma_units} FMA units (assumed; --fma-units) x {lanes} fp32 lanes ({isa}) "
                    f"x {per_fma} x {ghz:.2f} GHz ({which}) = {gflops:.1f} GFLOP/s")


def matmul_peak(device: torch.device, sizes=(1024, 2048, 4096), runs: int = 10) -> tuple[float, str]:
    """The best median GFLOP/s of square matmuls in the precision the encoders run in (fp16 on CUDA, else
    fp32): a practical ceiling for the same threads. Returns it and the figures by size, as text."""
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    rates = {}
    for n in sizes:
        a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
        with torch.inference_mode():
            times = time_runs(lambda a=a, b=b: torch.mm(a, b), device, runs, budget=3.0)
        rates[n] = 2 * n**3 / statistics.median(times) / 1e9
    return max(rates.values()), ", ".join(f"{n}: {r:.1f}" for n, r in rates.items())


def load(name: str, device: torch.device, precision: str = "auto") -> Encoder:
    """mbm's specs (`mbm-shapes`, `ARCH:TAG`) through `create_model`; a bare open_clip architecture
    (`ViT-B-32`) randomly initialised, so nothing is downloaded."""
    if name == "mbm-shapes" or ":" in name:
        return create_model(name, device=device, precision=precision)
    import open_clip
    model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=None, device=device)
    return Encoder(model, preprocess, open_clip.get_tokenizer(name), name=f"{name} (random init)",
                   device=device, precision=resolve_precision(precision, device))


def gflop_per_sample(enc: Encoder, tokens: torch.Tensor) -> tuple[float, float]:
    """GFLOP for one image and one text, from torch's FlopCounterMode (a multiply-add counts 2)."""
    # The counter knows no rule for the CPU's fused attention kernel, and it cannot see inside the fused
    # nn.MultiheadAttention inference fast path (projections included), so count with that path off.
    sdpa = lambda q, k, v, *args, out_shape=None, **kwargs: flop_counter.sdpa_flop_count(q, k, v)
    rules = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: sdpa}
    fast_path = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    pixels = torch.randn(1, 3, enc.image_size, enc.image_size, device=enc.device)
    try:
        counts = []
        for run in (lambda: enc.model.encode_image(pixels), lambda: enc.model.encode_text(tokens[:1])):
            with flop_counter.FlopCounterMode(display=False, custom_mapping=rules) as counter, torch.inference_mode():
                run()
            counts.append(counter.get_total_flops() / 1e9)
    finally:
        torch.backends.mha.set_fastpath_enabled(fast_path)
    return counts[0], counts[1]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_runs(fn, device: torch.device, runs: int, budget: float) -> list[float]:
    """Seconds per call after one warm-up call (the first call at a shape builds kernels): `runs` calls,
    or fewer once `budget` seconds have passed, but never fewer than MIN_RUNS."""
    fn()
    sync(device)
    times, start = [], time.perf_counter()
    while len(times) < runs and (len(times) < MIN_RUNS or time.perf_counter() - start < budget):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return times


def inputs(enc: Encoder, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random pixels `(B, 3, S, S)` and tokenised captions `(B, context)`, on the CPU (pinned for CUDA)."""
    captions = [f"a {c} {s}" for c in COLOURS for s in SHAPES]
    pixels = torch.randn(batch, 3, enc.image_size, enc.image_size)
    tokens = enc.tokenizer([captions[i % len(captions)] for i in range(batch)])
    if enc.device.type == "cuda":
        pixels, tokens = pixels.pin_memory(), tokens.pin_memory()
    return pixels, tokens


def time_tower(enc: Encoder, model: torch.nn.Module, tower: str, x: torch.Tensor,
               args: argparse.Namespace) -> list[float]:
    """Seconds per batch for one tower; the host-to-device copy is inside the timing (a no-op on the CPU)."""
    encode = model.encode_image if tower == "images" else model.encode_text
    with torch.inference_mode(), enc._autocast():
        return time_runs(lambda: encode(x.to(enc.device, non_blocking=True)), enc.device, args.repeats,
                         args.cell_seconds)


def extras(enc: Encoder, pixels: torch.Tensor, base: float, args: argparse.Namespace) -> str:
    """Speed-ups over the default image path: channels_last model and input, then oneDNN turned off."""
    last = copy.deepcopy(enc.model).to(memory_format=torch.channels_last)
    t_last = statistics.median(time_tower(enc, last, "images", pixels.contiguous(memory_format=torch.channels_last),
                                          args))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # flags() warns that oneDNN's TF32 needs an Intel GPU
        with torch.backends.mkldnn.flags(enabled=False):
            t_off = statistics.median(time_tower(enc, enc.model, "images", pixels, args))
    return f" {base / t_last:.2f}x | {base / t_off:.2f}x |"


def share(gflops: float, of: float | None) -> str:
    return f"{gflops / of:.1%}" if of else "-"


@dataclass
class Cell:
    model: str
    tower: str  # "images" or "texts"
    batch: int
    times: list[float]  # seconds per batch, one per timed run
    gflop: float  # per sample
    extra: str = ""  # the --extras columns, already formatted

    @property
    def rate(self) -> float:  # samples per second at the median time
        return self.batch / statistics.median(self.times)


def bench_model(name: str, enc: Encoder, args: argparse.Namespace) -> list[Cell]:
    """Time both towers of one model at every batch size."""
    g_img, g_txt = gflop_per_sample(enc, inputs(enc, 1)[1].to(enc.device))
    print(f"{enc!r}: {g_img:.3f} GFLOP per {enc.image_size} px image, {g_txt:.3f} per {enc.context_length}-token text")
    cells = []
    for tower, gflop in (("images", g_img), ("texts", g_txt)):
        for batch in args.batches:
            x = inputs(enc, batch)[tower == "texts"]
            cell = Cell(name, tower, batch, time_tower(enc, enc.model, tower, x, args), gflop)
            if args.extras:
                cell.extra = extras(enc, x, statistics.median(cell.times), args) if tower == "images" else " - | - |"
            cells.append(cell)
    return cells


def report(cells: list[Cell], peak: float | None, mm: float, extras: bool) -> list[str]:
    """The markdown table, then each tower's best batch; ratios are to the first batch size of the same tower."""
    first: dict[tuple[str, str], float] = {}
    for c in cells:
        first.setdefault((c.model, c.tower), c.rate)
    lines = [f"| model | tower | batch | ms/batch (min-max) | per s | x batch {cells[0].batch} | GFLOP/s | % peak "
             "| % mm | runs |" + (" channels_last | oneDNN off |" if extras else ""),
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|" + ("---:|---:|" if extras else "")]
    for c in cells:
        ms = [t * 1000 for t in c.times]
        lines.append(f"| {c.model} | {c.tower} | {c.batch} | {statistics.median(ms):.1f} ({min(ms):.1f}-{max(ms):.1f}) "
                     f"| {c.rate:.1f} | {c.rate / first[c.model, c.tower]:.2f}x | {c.rate * c.gflop:.1f} "
                     f"| {share(c.rate * c.gflop, peak)} | {share(c.rate * c.gflop, mm)} | {len(c.times)} |{c.extra}")
    lines.append("")
    for (model, tower), rate1 in first.items():
        b = max((c for c in cells if (c.model, c.tower) == (model, tower)), key=lambda c: c.rate)
        top = b.rate * b.gflop
        lines.append(f"- {model} {tower}: best at batch {b.batch}, {b.rate:.1f}/s = {top:.1f} GFLOP/s "
                     f"({share(top, peak)} of theoretical, {share(top, mm)} of matmul), {b.rate / rate1:.2f}x "
                     f"batch {cells[0].batch}")
    return lines


def timing_parser(doc: str, repeats: int, batches: str) -> argparse.ArgumentParser:
    """The options every encoder-timing benchmark takes (this one and bench_fastpaths.py)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--models", default="mbm-shapes,ViT-B-32")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--repeats", type=int, default=repeats, help="most timed runs per cell")
    parser.add_argument("--cell-seconds", type=float, default=3.0, help="stop a cell's runs after this (min 3 runs)")
    parser.add_argument("--batches", default=batches)
    parser.add_argument("--fma-units", type=int, default=2, help="FMA units per core for the theoretical peak")
    parser.add_argument("--ghz", type=float, help="clock for the theoretical peak (default: what the OS reports)")
    return parser


def parse_timing(parser: argparse.ArgumentParser) -> tuple[argparse.Namespace, torch.device]:
    """Parsed options (batches as ints) and the device, with torch's threads set as asked."""
    args = parser.parse_args()
    args.batches = [int(b) for b in args.batches.split(",")]
    torch.set_num_threads(args.threads)
    return args, resolve_device(args.device)


def main() -> None:
    parser = timing_parser(__doc__, repeats=20, batches="1,2,4,8,16,32,64")
    parser.add_argument("--extras", action="store_true", help="channels_last and oneDNN-off columns for images")
    args, device = parse_timing(parser)

    facts = cpu_facts()
    print(f"machine: {facts['name']}, {os.cpu_count()} cores, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads, oneDNN {torch.backends.mkldnn.is_available()}), "
          f"Python {platform.python_version()}, load average {os.getloadavg()[0]:.2f} at start")
    if device.type == "cuda":
        peak, ghz, how = None, 0.0, f"none computed for {torch.cuda.get_device_name(device)} (fp16 autocast)"
    else:
        peak, ghz, how = theoretical_peak(facts, torch.get_num_threads(), args.fma_units, args.ghz)
    print(f"theoretical peak: {how}")
    mm_before, how_before = matmul_peak(device)
    cells = [c for name in args.models.split(",") for c in bench_model(name, load(name, device), args)]
    mm_after, how_after = matmul_peak(device)
    mm = max(mm_before, mm_after)  # a ceiling: the better of the two, as noise only ever slows a run down
    dtype = "fp16" if device.type == "cuda" else "fp32"
    print(f"measured peak: {mm:.1f} GFLOP/s = {share(mm, peak)} of theoretical: the best median GFLOP/s of an n x n "
          f"{dtype} torch.mm\n  by n, before the encoders {how_before}; after them {how_after}")
    if peak and mm > peak:  # the clock used is below the one the cores really run at (turbo)
        print(f"  the matmul beats the theoretical peak: the cores run at >= {mm / peak * ghz:.2f} GHz")
    print("\n" + "\n".join(report(cells, peak, mm, args.extras)))
    print(f"\nload average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
