"""`create_model(spec, device, precision, backend=...)`: a spec is parsed once (`mbm.models._registry.parse_spec`),
its scheme's registered loader builds the open_clip model, and an `Encoder` wraps it on the device and in the
precision decided once (`mbm.models._device`). Model classes, transforms and tokenizers are open_clip's own; weights
are read safely (`mbm.models._weights`).
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import torch

from mbm.errors import InputError
from mbm.models._device import resolve_device, resolve_precision
from mbm.models._query import write_torch_manifest
from mbm.models._registry import (
    ASSETS,
    EMBEDDED,
    Spec,
    cached_weights,
    default_cache_dir,
    list_models,
    loader,
    parse_spec,
)
from mbm.models._registry import register as register_loader
from mbm.models._weights import WEIGHT_SUFFIXES, WeightsUnavailableError, reading_weights, weights_in
from mbm.models.encoder import Encoder
from mbm.models.scope import load_scope

log = logging.getLogger(__name__)
BACKENDS = ("torch", "onnx")


def create_model(spec: str = EMBEDDED, device: str | torch.device = "auto", precision: str = "auto", *,
                 backend: str = "torch", channels_last: bool | None = None,
                 cache_dir: str | Path | None = None, query_dir: str | Path | None = None) -> Encoder:
    """Create an encoder from a spec (see `mbm.models._registry` for the kinds of spec).

    Args:
        spec: "mbm-shapes", an open_clip "ARCH:TAG", "ARCH:/path/to/weights", "hf-hub:ORG/REPO", or a local path.
        device: "auto", "cpu", "cuda", "cuda:1", "mps".
        precision: "auto", "fp32", "fp16" or "bf16" (autocast on CUDA; bf16 also on a CPU with bf16 instructions).
        backend: "torch", or "onnx": both towers exported once to ONNX (under `cache_dir`) and run by
            onnxruntime (`pip install onnxruntime onnx onnxscript`); the torch model stays for what needs it.
        channels_last: NHWC image tower; None: on for convolutional towers on the CPU.
        cache_dir: the onnx backend's files; default `default_cache_dir() / "onnx"`.
        query_dir: where the torch backend leaves a `query.json` so that later query processes can embed text
            without torch (`mbm.models._query.write_torch_manifest`); None leaves none.

    Raises:
        InputError: the spec names no model mbm can find, or the settings cannot go together.
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
    parsed = parse_spec(spec)
    if parsed is None:
        raise InputError(f"unknown model {spec!r}; choose from {list_models()}, "
                         "any open_clip ARCH:TAG, or the path of a local checkpoint")
    model, preprocess, tokenizer = loader(parsed.scheme)(parsed, dev)
    encoder = Encoder(model, preprocess, tokenizer, name=spec, device=dev, precision=prec,
                      channels_last=channels_last)
    if parsed.scheme in ("mbm", "local-dir"):
        folder = ASSETS / parsed.name if parsed.scheme == "mbm" else Path(parsed.name).expanduser()
        encoder.scope = load_scope(folder if folder.is_dir() else folder.parent)
    if backend == "onnx":
        from mbm.models._onnx import onnx_runner
        encoder.weights = weights_file(parsed)  # named in the graphs' query.json, for torch-free query processes
        encoder.use_runner(onnx_runner(encoder, cache_dir or default_cache_dir() / "onnx"), backend="onnx")
    elif query_dir is not None:
        try:
            write_torch_manifest(encoder, weights_file(parsed), Path(query_dir))
        except OSError as e:  # a read-only cache still serves; such queries load the full model
            log.warning("cannot write a query.json under %s: %s", query_dir, e)
    log.info("loaded %r (%s)", encoder, encoder.runner.what if encoder.runner else "plain torch")
    return encoder


def weights_file(spec: Spec) -> Path | None:
    """The one file a spec's weights were read from (None when it cannot say, e.g. weights not cached)."""
    if spec.scheme in ("mbm", "local-dir"):
        path = ASSETS / spec.name if spec.scheme == "mbm" else Path(spec.name).expanduser()
        found = weights_in(path) if path.is_dir() else path
    elif spec.scheme == "checkpoint":
        found = Path(spec.tag).expanduser()
    elif spec.scheme == "open_clip":
        from open_clip.pretrained import get_pretrained_cfg
        found = cached_weights(get_pretrained_cfg(spec.name, spec.tag).get("hf_hub", ""))
    else:  # hf-hub: the repository's default weights files, as an `hf_hub` entry "org/name/" names them
        found = cached_weights(f"{spec.name}/")
    return found if found is not None and found.is_file() else None


@register_loader("mbm")
def _embedded(spec: Spec, device: torch.device):
    """A model that ships in `assets/NAME/` (open_clip's local layout)."""
    if not (ASSETS / spec.name / "open_clip_config.json").is_file():
        raise InputError(f"unknown model {spec.text!r}: no embedded model {spec.name!r} ships here; "
                         f"choose from {list_models()}")
    return _local_dir(Spec(spec.text, "local-dir", str(ASSETS / spec.name)), device)


@register_loader("local-dir")
def _local_dir(spec: Spec, device: torch.device):
    """open_clip's local layout: `open_clip_config.json` plus weights in one folder; or one weights file with the
    config beside it."""
    import open_clip
    path = Path(spec.name).expanduser()
    folder = path if path.is_dir() else path.parent
    if not path.is_dir() and path.suffix not in WEIGHT_SUFFIXES:
        raise InputError(f"{path} is not a weights file; expected one of {WEIGHT_SUFFIXES}")
    if not (folder / "open_clip_config.json").is_file():
        raise InputError(f"no open_clip_config.json in {folder}; a model folder needs one beside its weights (for a "
                         "checkpoint of a known architecture use ARCH:/path/to/weights)")
    name = f"local-dir:{folder}"
    built = without_init(name, weights_in(folder) if path.is_dir() else path, device)
    if built is not None:
        return *built, open_clip.get_tokenizer(name)
    if path.is_dir():
        with reading_weights(weights_in(folder)):
            model, _, preprocess = open_clip.create_model_and_transforms(name, device=device, require_pretrained=True)
        return model, preprocess, open_clip.get_tokenizer(name)
    model, _, preprocess = open_clip.create_model_and_transforms(name, load_weights=False)
    with reading_weights(path):
        open_clip.load_checkpoint(model, str(path), weights_only=True)
    return model.to(device), preprocess, open_clip.get_tokenizer(name)


@register_loader("hf-hub")
def _hf_hub(spec: Spec, device: torch.device):
    """A hub repository in open_clip's layout, read from the Hugging Face cache (downloaded once when online)."""
    import open_clip
    from huggingface_hub import try_to_load_from_cache
    config = try_to_load_from_cache(spec.name, "open_clip_config.json")
    if not hub_reachable():
        if not isinstance(config, str):
            raise _unavailable(spec.text, ConnectionError("the hub cannot be reached"))
        return _local_dir(Spec(spec.text, "local-dir", str(Path(config).parent)), device)  # the cached snapshot
    name = f"hf-hub:{spec.name}"
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(name, device=device)
    except (OSError, RuntimeError, ValueError) as e:  # no such repo, a hub error
        raise _unavailable(spec.text, e) from e
    return model, preprocess, open_clip.get_tokenizer(name)


@register_loader("open_clip")
def _open_clip(spec: Spec, device: torch.device):
    """An open_clip architecture with one of its pretrained tags: its weights from the Hugging Face cache with no
    network at all, else downloaded once; refused at once when they are not cached and the hub is unreachable."""
    import open_clip
    from open_clip.pretrained import download_pretrained, get_pretrained_cfg
    pretrained_cfg = get_pretrained_cfg(_known_arch(spec), spec.tag)
    if not pretrained_cfg:
        raise InputError(f"unknown model {spec.text!r}: {spec.name} has no pretrained tag {spec.tag!r}; choose "
                         f"from {open_clip.list_pretrained_tags_by_model(spec.name)} or give a weights file")
    weights = cached_weights(pretrained_cfg.get("hf_hub", ""))
    if weights is None:
        if not hub_reachable(pretrained_cfg.get("url") or None):
            raise _unavailable(spec.text, ConnectionError("the hub cannot be reached"))
        try:
            weights = Path(download_pretrained(pretrained_cfg))
        except Exception as e:  # noqa: BLE001 - DNS, HTTP, a hub error: one message for people
            raise _unavailable(spec.text, e) from e
    return _checkpoint(Spec(spec.text, "checkpoint", spec.name, str(weights)), device)


@register_loader("checkpoint")
def _checkpoint(spec: Spec, device: torch.device):
    """A weights file of a known architecture (open_clip reads safetensors, or torch checkpoints weights-only)."""
    import open_clip
    weights = str(Path(spec.tag).expanduser())
    built = without_init(_known_arch(spec), Path(weights), device)
    if built is not None:
        return *built, open_clip.get_tokenizer(spec.name)
    with reading_weights(Path(weights)):
        model, _, preprocess = open_clip.create_model_and_transforms(_known_arch(spec), pretrained=weights,
                                                                     device=device)
    return model, preprocess, open_clip.get_tokenizer(spec.name)


def without_init(name: str, weights: Path, device: torch.device):
    """`(model, preprocess)`: open_clip's `name` with the weights in `weights`, never randomly initialised. It is built
    on the meta device (no memory, no init: for a ViT-B-32 that saves 0.8 s and the model's size in peak memory),
    then the checkpoint's tensors, through open_clip's own conversions, are assigned in the model's dtypes.

    Returns None where that cannot stand in for open_clip's plain load: a format open_clip converts otherwise, keys
    or shapes that differ, a tensor left without a value other than the causal mask, any error (the plain load
    then runs and reports a bad file as before)."""
    import itertools

    import open_clip
    from open_clip import factory
    from open_clip.model import CLIP
    if not weights.is_file() or weights.suffix in (".npz", ".npy"):
        return None
    try:
        with torch.device("meta"), _quiet(NO_WEIGHTS_YET):
            model, _, preprocess = open_clip.create_model_and_transforms(name, device="meta", load_weights=False)
        state = factory.convert_state_dict(model, factory.load_state_dict(str(weights), weights_only=True))
        if "positional_embedding" in state and not hasattr(model, "positional_embedding"):
            state = factory.convert_to_custom_text_state_dict(state)
        factory.resize_pos_embed(state, model)
        factory.resize_text_pos_embed(state, model)
        target = model.state_dict()
        if set(state) != set(target) or any(state[k].shape != target[k].shape for k in state):
            return None
        model.load_state_dict({k: v.to(target[k].dtype) for k, v in state.items()}, strict=True, assign=True)
    except Exception as e:  # noqa: BLE001 - whatever it is, the plain load decides (and names a bad file)
        log.debug("loading %s the plain way: %s", weights, e)
        return None
    left = [n for n, t in itertools.chain(model.named_parameters(), model.named_buffers()) if t.is_meta]
    if left == ["attn_mask"] and isinstance(model, CLIP):  # not in checkpoints: the causal mask, as open_clip makes it
        n = model.positional_embedding.shape[0]
        model.attn_mask = torch.full((n, n), float("-inf")).triu_(1)
    elif left:
        return None
    return model.to(device), preprocess


NO_WEIGHTS_YET = "No pretrained weights loaded"  # open_clip's warning for a model built without weights: here, not yet


@contextlib.contextmanager
def _quiet(words: str):
    """Drop the root logger's records that contain `words` while the block runs (open_clip logs to the root)."""
    class Drop(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return words not in record.getMessage()
    drop = Drop()
    logging.getLogger().addFilter(drop)
    try:
        yield
    finally:
        logging.getLogger().removeFilter(drop)


def _known_arch(spec: Spec) -> str:
    import open_clip
    if spec.name not in open_clip.list_models():
        raise InputError(f"unknown model {spec.text!r}: open_clip has no architecture {spec.name!r}; "
                         f"choose from {list_models()} or an ARCH:TAG from open_clip.list_pretrained()")
    return spec.name


def _unavailable(spec: str, e: Exception) -> WeightsUnavailableError:
    return WeightsUnavailableError(
        f"cannot load {spec!r}: its weights are not in the local cache and the model hub is unreachable "
        f"({type(e).__name__}). Connect once to download them, or use {EMBEDDED!r}, "
        "the embedded model that works offline.")


def is_cached(spec: str, cache_dir: str | None = None) -> bool:
    """True if an open_clip `ARCH:TAG`'s weights are already in the local Hugging Face cache (no network)."""
    from open_clip.pretrained import get_pretrained_cfg
    arch, _, tag = spec.partition(":")
    parsed = parse_spec(spec)
    hub = get_pretrained_cfg(arch, tag).get("hf_hub", "") if parsed and parsed.scheme == "open_clip" else ""
    return cached_weights(hub, cache_dir) is not None


def hub_reachable(url: str | None = None, timeout: float = 1.0) -> bool:
    """Whether the model hub (or `url`'s host, or the proxy in between) accepts a connection within `timeout`
    seconds. huggingface_hub retries an unreachable host for about a minute; this asks once. False in
    `HF_HUB_OFFLINE` mode. Name lookup runs in a daemon thread, so a resolver that hangs cannot hold the caller."""
    import socket
    import threading
    import urllib.parse
    import urllib.request

    from huggingface_hub import constants
    if constants.HF_HUB_OFFLINE:
        return False
    target = urllib.parse.urlsplit(url or constants.ENDPOINT)
    proxy = urllib.request.getproxies().get(target.scheme)
    if proxy and not urllib.request.proxy_bypass(target.hostname or ""):
        target = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    port = target.port or (443 if target.scheme == "https" else 80)
    result: list[bool] = []

    def connect() -> None:
        try:
            socket.create_connection((target.hostname, port), timeout=timeout).close()
            result.append(True)
        except (OSError, ValueError, TypeError):
            result.append(False)
    worker = threading.Thread(target=connect, name="mbm-hub-probe", daemon=True)
    worker.start()
    worker.join(timeout)
    return bool(result and result[0])
