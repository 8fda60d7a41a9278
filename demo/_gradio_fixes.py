"""A fix to Gradio that many visitors at once need: images written to its cache atomically.

`gradio.processing_utils.save_pil_to_cache` names a returned PIL image's file by a hash of its bytes and writes it
with `Path.write_bytes` every time. When two visitors get the same picture back (the same search result), the second
write truncates the file while the first visitor's browser is downloading it, which then breaks ("peer closed
connection without sending complete message body"). `write_images_atomically()` keeps Gradio's encoding and naming
and only changes the write: into a staging folder in the same cache, then renamed into place. A reader keeps the
file it opened, whose bytes are the same.
"""

from __future__ import annotations

import functools
import os
import tempfile
from pathlib import Path


def atomic(save_pil_to_cache):
    """`save_pil_to_cache` that writes into a fresh staging folder of `cache_dir`, then renames into place."""
    @functools.wraps(save_pil_to_cache)
    def save(img, cache_dir: str, *args, **kwargs) -> str:
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache_dir, prefix=".staging-") as staging:
            written = Path(save_pil_to_cache(img, staging, *args, **kwargs))
            final = Path(cache_dir).resolve() / written.relative_to(Path(staging).resolve())
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(written, final)
        return str(final)
    save.mbm_atomic = True
    return save


def write_images_atomically() -> None:
    """Install `atomic` over Gradio's `save_pil_to_cache` (every caller looks it up on the module); idempotent."""
    from gradio import processing_utils
    if not getattr(processing_utils.save_pil_to_cache, "mbm_atomic", False):
        processing_utils.save_pil_to_cache = atomic(processing_utils.save_pil_to_cache)
