"""`EngineConfig`: every setting of an `mbm.engine.Engine`, from CLI flags and `MBM_*` variables in one place.

Imports no torch (nor the engine), so a process that only answers a query can read its settings cheaply
(`mbm._cli_query`); `mbm.engine` re-exports it.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING

from mbm.models._registry import ASSETS, default_cache_dir

if TYPE_CHECKING:
    from mbm.models import Encoder

BUILTIN_GALLERY = ASSETS / "gallery"  # served when no gallery is configured


@dataclass
class EngineConfig:
    model: str | None = None  # a model spec (mbm-shapes, ARCH:TAG, a checkpoint); None: `default_model()`
    gallery: str | None = None  # a folder of images to serve; None serves the built-in sample gallery
    cache_dir: str | None = None  # stores (SQLite, FAISS, thumbnails) of galleries; default ~/.cache/mbm
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    precision: str = "auto"  # auto | fp32 | fp16 | bf16 (fp16 needs CUDA; bf16 CUDA or a CPU with bf16 instructions)
    index_factory: str | None = None  # a FAISS factory string; None picks exact or HNSW by gallery size
    on_space: bool = False  # running as a Hugging Face Space (SPACE_ID is set): public, hub reachable
    backend: str = "torch"  # torch | onnx (ONNX Runtime; its exported files live under cache_path() / "onnx")

    ENV = {"model": "MBM_MODEL", "gallery": "MBM_GALLERY", "cache_dir": "MBM_CACHE", "device": "MBM_DEVICE",
           "precision": "MBM_PRECISION", "index_factory": "MBM_INDEX", "backend": "MBM_BACKEND"}

    @classmethod
    def from_env(cls, environ: dict | None = None, **overrides) -> EngineConfig:
        """Defaults, then `MBM_*` variables, then `overrides` that are not None (e.g. CLI flags)."""
        environ = os.environ if environ is None else environ
        values = {f.name: environ[cls.ENV[f.name]] for f in fields(cls) if environ.get(cls.ENV.get(f.name, ""))}
        values["on_space"] = bool(environ.get("SPACE_ID"))
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def cache_path(self) -> Path:
        if self.cache_dir:
            return Path(self.cache_dir).expanduser()
        return default_cache_dir()

    def store_for(self, root: str | Path) -> Path:
        """Where a gallery's store lives: under the cache, so image folders (and assets/) stay untouched."""
        root = Path(root).expanduser().resolve()
        digest = hashlib.sha1(str(root).encode()).hexdigest()[:10]
        return self.cache_path() / "galleries" / f"{root.name or 'root'}-{digest}"

    def create_model(self, spec: str) -> Encoder:
        """`create_model(spec)` with these settings (device, precision, backend; the onnx files in the cache)."""
        from mbm.models import create_model
        return create_model(spec, self.device, self.precision, backend=self.backend,
                            cache_dir=self.cache_path() / "onnx", query_dir=self.cache_path() / "query")
