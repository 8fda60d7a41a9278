"""Reading weights safely: safetensors, or `torch.load(weights_only=True)` through open_clip, never a pickle of
objects; whatever a damaged or hostile file makes a loader raise becomes a `WeightsFileError` naming it."""

from __future__ import annotations

import contextlib
import pickle
import zipfile
from pathlib import Path

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


def weights_in(folder: Path) -> Path:
    """The weights file open_clip reads from a model folder (the folder itself if there is none)."""
    return next((p for p in sorted(folder.iterdir()) if p.suffix in WEIGHT_SUFFIXES), folder)
