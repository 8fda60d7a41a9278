"""Where and in what precision a model runs: `resolve_device` and `resolve_precision`, decided once per model."""

from __future__ import annotations

import platform

import torch

from mbm.errors import InputError

PRECISIONS = ("auto", "fp32", "fp16", "bf16")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """`auto` picks CUDA, then Apple MPS, then the CPU; anything else is taken as given, but a CUDA device that torch
    cannot see is refused with what to use instead (rather than torch's error at the first tensor moved there)."""
    if str(device) != "auto":
        dev = torch.device(device)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise InputError(f"device {str(device)!r}: torch sees no CUDA device on this machine; use the CPU "
                             "(--device cpu), or a CUDA build of torch where a GPU is")
        return dev
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def cpu_has_bf16() -> bool:
    """True where the CPU computes in bf16 itself: x86 with AVX512-BF16 or AMX, ARM with BF16 (oneDNN's check).
    (Plain AVX-512 can run bf16 too, converting every value, which is no faster than fp32.)"""
    try:
        if platform.machine().lower() in ("x86_64", "amd64", "i686", "x86"):
            return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
        return torch.backends.mkldnn.is_available() and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # private helpers of torch; a build without them has no say
        return False


def resolve_precision(precision: str, device: torch.device, backend: str = "torch") -> str:
    """`auto` is fp16 autocast on CUDA and fp32 elsewhere; fp16 needs CUDA, bf16 CUDA or a CPU with bf16
    instructions; the ONNX backend runs fp32. bf16 on the CPU is opt-in: 3-4x fp32 for a ViT-B-32 with AMX, but
    scores move by up to ~3e-3, enough to reorder near-ties, and then rankings would differ from CPU to CPU."""
    if precision not in PRECISIONS:
        raise InputError(f"unknown precision {precision!r}; choose from {PRECISIONS}")
    if backend == "onnx":
        if precision not in ("auto", "fp32"):
            raise InputError(f"the onnx backend runs fp32, not {precision!r}; use precision 'auto' or 'fp32'")
        return "fp32"
    if precision == "auto":
        return "fp16" if device.type == "cuda" else "fp32"
    if precision == "bf16" and device.type == "cpu":
        if not cpu_has_bf16():
            raise InputError("precision 'bf16' on the CPU needs bf16 instructions (AVX512-BF16 or AMX on x86, "
                             "BF16 on ARM), which this CPU lacks; use 'fp32'")
        return precision
    if precision != "fp32" and device.type != "cuda":
        raise InputError(f"precision {precision!r} needs a CUDA device, got {device.type!r}; use 'fp32'"
                         + (" (or 'bf16')" if device.type == "cpu" and cpu_has_bf16() else ""))
    return precision
