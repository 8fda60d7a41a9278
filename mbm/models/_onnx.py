"""The ONNX Runtime backend: both towers exported once per weights, then run by onnxruntime.

`onnx_runner(encoder, cache_dir)` exports `image.onnx` (pixels `(B, 3, S, S)` float32 -> `(B, D)`) and
`text.onnx` (token ids `(B, L)` int64 -> `(B, D)`; L any length up to the context for a causal tower, so a query
costs its own length: `mbm.models.encoder.causal_text`) with `torch.onnx.export` (the dynamo exporter, which needs
onnx and onnxscript) into `cache_dir / <encoder key>/`, unless they are already there, and returns a `Runner`
over two `onnxruntime.InferenceSession`s: the CUDA provider when the encoder is on CUDA and onnxruntime has it,
else the CPU one with torch's thread count. Outputs match the torch model's within 1e-3 cosine
(tests/test_fastpaths.py). Only onnxruntime is needed to run files exported before.
"""

from __future__ import annotations

import importlib
import logging
import os
import time
from pathlib import Path

import torch

from mbm.models._query import folder_name, ort_options, write_manifest
from mbm.models.encoder import Encoder, Runner, causal_text, cut_tokens, trims_text

log = logging.getLogger(__name__)
INSTALL = "pip install onnxruntime onnx onnxscript"
FILES = ("image.onnx", "text.onnx")
INPUT = "mbm_input"  # the graphs' input name (names inside the graph, like "embedding", must not clash)
FORMAT = 2  # part of the cache folder's name: 2 = text graphs of any length (1 took exactly the context length)


def need(module: str, what: str):
    """Import `module`, or say in one line what to install."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(f"the ONNX Runtime backend needs {module} to {what}: {INSTALL}") from e


def onnx_folder(cache_dir: str | Path, key: str) -> Path:
    """Where the files of the weights `key` live: a readable name plus a hash, safe on every file system."""
    return Path(cache_dir).expanduser() / folder_name(key, f"/{FORMAT}")


class _Tower(torch.nn.Module):
    """One tower of an open_clip model as a module of its own, for the exporter."""

    def __init__(self, model: torch.nn.Module, tower: str):
        super().__init__()
        self.model, self.tower = model, tower

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.tower == "image":
            return self.model.encode_image(x)
        return causal_text(self.model, x) if trims_text(self.model) else self.model.encode_text(x)


def export(encoder: Encoder, folder: Path) -> None:
    """Write `image.onnx` and `text.onnx` for `encoder` into `folder` (each atomically: a temp file, then renamed)."""
    need("onnx", "export the model")
    need("onnxscript", "export the model")
    folder.mkdir(parents=True, exist_ok=True)
    size = encoder.image_size
    short = trims_text(encoder.model)
    tokens = encoder.tokenizer(["a photo of a red circle", "x"])
    examples = {"image": torch.randn(2, 3, size, size, device=encoder.device),
                "text": (cut_tokens(tokens) if short else tokens).to(encoder.device)}
    batch = torch.export.Dim("batch", min=1, max=65536)
    length = torch.export.Dim("length", min=2, max=encoder.context_length)
    logging.getLogger("onnxscript").setLevel(logging.ERROR)  # its optimiser's notes are for exporter developers
    for tower, x in examples.items():
        start, path = time.perf_counter(), folder / f"{tower}.onnx"
        tmp = folder / f".{tower}.{os.getpid()}.onnx"
        try:
            with torch.inference_mode(False), torch.no_grad():
                program = torch.onnx.export(_Tower(encoder.model, tower).eval(), (x,), dynamo=True, verbose=False,
                                            input_names=[INPUT], output_names=["mbm_output"],
                                            dynamic_shapes=({0: batch, 1: length} if tower == "text" and short
                                                            else {0: batch},))
            program.save(str(tmp), external_data=False)
            os.replace(tmp, path)
        except Exception as e:  # noqa: BLE001 - the exporter's many error types: one message for people
            raise RuntimeError(f"cannot export the {tower} tower of {encoder.name} to ONNX ({type(e).__name__}: "
                               f"{e}); use the torch backend for this model") from e
        finally:
            tmp.unlink(missing_ok=True)
        log.info("exported the %s tower of %s to %s in %.1f s", tower, encoder.key, path, time.perf_counter() - start)


def onnx_runner(encoder: Encoder, cache_dir: str | Path) -> Runner:
    """Sessions over the cached files of `encoder`'s weights, exporting them first if they are missing."""
    ort = need("onnxruntime", "run the model")
    folder = onnx_folder(cache_dir, encoder.key)
    providers = ["CPUExecutionProvider"]
    if encoder.device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    threads = torch.get_num_threads()  # the image graph indexes, the text graph answers queries (`ort_options`)
    open_both = lambda: [ort.InferenceSession(str(folder / name), ort_options(threads, spin=name != FILES[0]),
                                              providers=providers) for name in FILES]
    if not all((folder / name).is_file() for name in FILES):
        export(encoder, folder)
        image, text = open_both()
    else:
        try:
            image, text = open_both()
        except Exception as e:  # noqa: BLE001 - onnxruntime's own error types: a cached file it cannot load
            log.warning("re-exporting %s: its cached ONNX files do not load (%s)", encoder.key, e)
            export(encoder, folder)
            image, text = open_both()

    short = trims_text(encoder.model)
    try:  # the text graph's query.json: a later query process can then answer without torch (mbm.models._query)
        write_manifest(folder, encoder, getattr(encoder, "weights", None), short)
    except OSError as e:  # a read-only cache still serves; such queries load the full model
        log.warning("cannot write the query.json of %s: %s", folder, e)

    def run(session, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run(None, {INPUT: x.cpu().numpy()})[0])
    return Runner(image=lambda x: run(image, x.float().contiguous()), text=lambda t: run(text, t.long()),
                  what=f"onnxruntime {providers[0]}", short_text=short)
