"""`create_model(spec, device, precision, backend=...)`: every kind of spec becomes an `Encoder`.

Device, precision and the fast paths (bf16 on a CPU that has it, channels_last, the ONNX Runtime backend) are
resolved once here; model classes, transforms and tokenizers are open_clip's own.
Weights are read as safetensors or with `torch.load(weights_only=True)` (open_clip's loader), never by
unpickling arbitrary objects.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import platform
import zipfile
from pathlib import Path

import torch

from mbm.errors import InputError
from mbm.models._registry import EMBEDDED, KNOWN_MODELS, SPACE_MODEL, classify_spec, embedded_dir, list_models
from mbm.models.encoder import Encoder

log = logging.getLogger(__name__)
PRECISIONS = ("auto", "fp32", "fp16", "bf16")
BACKENDS = ("torch", "onnx")
WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights are neither in the local cache nor downloadable right now."""


class WeightsFileError(ValueError):
    """A weights file that is there but cannot be used: truncated, damaged, not weights, for another architecture,
    or a pickle holding more than plain tensors (refused: unpickling runs code). The message names the file."""


@contextlib.contextmanager
def reading_weights(path: Path):
    """`with reading_weights(path): load(...)`: whatever a damaged or hostile weights file makes the loaders raise
    becomes a `WeightsFileError` naming the file."""
    from safetensors import SafetensorError
    try:
        yield
    except WeightsUnavailableError:
        raise
    except pickle.UnpicklingError as e:
        raise WeightsFileError(f"refused to load {path}: it holds Python objects, not only weights, and unpickling "
                               "them could run code (torch.load with weights_only=True said: "
                               f"{_first_line(e)}). Use a .safetensors file.") from e
    except (SafetensorError, RuntimeError, EOFError, zipfile.BadZipFile, KeyError) as e:
        raise WeightsFileError(f"cannot load the weights in {path}: the file is truncated, damaged or not the "
                               f"weights of this model ({type(e).__name__}: {_first_line(e)}). Copy or download "
                               "it again.") from e


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [""])[0][:200]


def _weights_in(folder: Path) -> Path:
    """The weights file open_clip reads from a model folder (the folder itself if there is none)."""
    return next((p for p in sorted(folder.iterdir()) if p.suffix in WEIGHT_SUFFIXES), folder)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """`auto` picks CUDA, then Apple MPS, then the CPU; anything else is taken as given."""
    if str(device) != "auto":
        return torch.device(device)
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


def default_cache_dir() -> Path:
    """mbm's cache folder when none is configured: ~/.cache/mbm, or mbm under $XDG_CACHE_HOME (the XDG convention)."""
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "mbm"


def create_model(spec: str = EMBEDDED, device: str | torch.device = "auto", precision: str = "auto", *,
                 backend: str = "torch", channels_last: bool | None = None,
                 cache_dir: str | Path | None = None) -> Encoder:
    """Create an encoder from a spec (see `mbm.models._registry` for the kinds of spec).

    Args:
        spec: "mbm-shapes", an open_clip "ARCH:TAG", "ARCH:/path/to/weights", or a local path.
        device: "auto", "cpu", "cuda", "cuda:1", "mps".
        precision: "auto", "fp32", "fp16" or "bf16" (autocast on CUDA; bf16 also on a CPU with bf16 instructions).
        backend: "torch", or "onnx": both towers exported once to ONNX (under `cache_dir`) and run by
            onnxruntime (`pip install onnxruntime onnx onnxscript`); the torch model stays for what needs it.
        channels_last: NHWC image tower; None: on for convolutional towers on the CPU.
        cache_dir: the onnx backend's files; default `default_cache_dir() / "onnx"`.

    Raises:
        ValueError: the spec names no model mbm can find, or the settings cannot go together.
        WeightsUnavailableError: an open_clip tag whose weights are not cached while the hub is unreachable.
        WeightsFileError: the weights file is damaged, or a pickle that is more than weights (the message names it).
        ImportError: the onnx backend without onnxruntime (the message says what to install).
    """
    if backend not in BACKENDS:
        raise InputError(f"unknown backend {backend!r}; choose from {BACKENDS}")
    dev = resolve_device(device)
    prec = resolve_precision(precision, dev, backend)
    if backend == "onnx":
        from mbm.models._onnx import need
        need("onnxruntime", "run the model")  # before loading anything: the error people can act on first
    kind = classify_spec(spec)
    if kind == "embedded":
        model, preprocess, tokenizer = _from_dir(embedded_dir(spec), dev)
    elif kind == "path":
        model, preprocess, tokenizer = _from_path(Path(spec).expanduser(), dev)
    elif kind == "open_clip":
        model, preprocess, tokenizer = _from_open_clip(spec, dev)
    else:
        raise InputError(f"unknown model {spec!r}; choose from {list_models()}, "
                         "any open_clip ARCH:TAG, or the path of a local checkpoint")
    encoder = Encoder(model, preprocess, tokenizer, name=spec, device=dev, precision=prec,
                      channels_last=channels_last)
    if backend == "onnx":
        from mbm.models._onnx import onnx_runner
        encoder.use_runner(onnx_runner(encoder, cache_dir or default_cache_dir() / "onnx"), backend="onnx")
    log.info("loaded %r (%s)", encoder, encoder.runner.what if encoder.runner else "plain torch")
    return encoder


def _from_dir(folder: Path, device: torch.device):
    """open_clip's local layout: `open_clip_config.json` plus weights in one folder."""
    import open_clip
    if not (folder / "open_clip_config.json").is_file():
        raise FileNotFoundError(f"{folder} has no open_clip_config.json; a model folder needs one beside its weights")
    name = f"local-dir:{folder}"
    with reading_weights(_weights_in(folder)):
        model, _, preprocess = open_clip.create_model_and_transforms(name, device=device, require_pretrained=True)
    return model, preprocess, open_clip.get_tokenizer(name)


def _from_path(path: Path, device: torch.device):
    """A folder, or one weights file whose `open_clip_config.json` lies beside it."""
    if path.is_dir():
        return _from_dir(path, device)
    if path.suffix not in WEIGHT_SUFFIXES:
        raise InputError(f"{path} is not a weights file; expected one of {WEIGHT_SUFFIXES}")
    import open_clip
    name = f"local-dir:{path.parent}"
    if not (path.parent / "open_clip_config.json").is_file():
        raise FileNotFoundError(f"no open_clip_config.json beside {path}; "
                                "for a checkpoint of a known architecture use ARCH:/path/to/weights")
    model, _, preprocess = open_clip.create_model_and_transforms(name, load_weights=False)
    with reading_weights(path):
        open_clip.load_checkpoint(model, str(path), weights_only=True)
    return model.to(device), preprocess, open_clip.get_tokenizer(name)


def _from_open_clip(spec: str, device: torch.device):
    import open_clip
    from open_clip.pretrained import download_pretrained, get_pretrained_cfg
    arch, _, tag = spec.partition(":")
    if arch not in open_clip.list_models():
        raise InputError(f"unknown model {spec!r}: open_clip has no architecture {arch!r}; "
                         f"choose from {list_models()} or an ARCH:TAG from open_clip.list_pretrained()")
    pretrained_cfg = get_pretrained_cfg(arch, tag)
    if not pretrained_cfg and not Path(tag).expanduser().is_file():
        raise InputError(f"unknown model {spec!r}: {arch} has no pretrained tag {tag!r}; "
                         f"choose from {open_clip.list_pretrained_tags_by_model(arch)} or give a weights file")
    if pretrained_cfg:
        try:  # a cache hit returns at once; a miss tries the hub
            weights = Path(download_pretrained(pretrained_cfg) or tag)
        except Exception as e:  # noqa: BLE001 - offline, DNS, HTTP, missing cache: one message for people
            raise WeightsUnavailableError(
                f"cannot load {spec!r}: its weights are not in the local cache and the model hub is unreachable "
                f"({type(e).__name__}). Connect once to download them, or use {EMBEDDED!r}, "
                "the embedded model that works offline.") from e
    else:
        tag = str(Path(tag).expanduser())
        weights = Path(tag)
    with reading_weights(weights):
        model, _, preprocess = open_clip.create_model_and_transforms(arch, pretrained=tag, device=device)
    return model, preprocess, open_clip.get_tokenizer(arch)


def is_cached(spec: str, cache_dir: str | None = None) -> bool:
    """True if an open_clip `ARCH:TAG`'s weights are already in the local Hugging Face cache (no network)."""
    from huggingface_hub import try_to_load_from_cache
    from open_clip.pretrained import get_pretrained_cfg
    arch, _, tag = spec.partition(":")
    hub = get_pretrained_cfg(arch, tag).get("hf_hub", "") if classify_spec(spec) == "open_clip" else ""
    if not hub:
        return False
    repo_id, filename = os.path.split(hub)  # "org/name/" -> open_clip's default file names
    names = [filename] if filename else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
    return any(isinstance(try_to_load_from_cache(repo_id, name, cache_dir=cache_dir), str) for name in names)


def default_model(on_space: bool, cache_dir: str | None = None) -> str:
    """The model to serve when none is named: on a Hugging Face Space, `SPACE_MODEL` (it can download);
    elsewhere the first known open_clip model whose weights are cached, else the embedded model."""
    if on_space:
        return SPACE_MODEL
    cached = (m.spec for m in KNOWN_MODELS if not m.offline and is_cached(m.spec, cache_dir))
    return next(cached, EMBEDDED)
