"""The Gradio page. `build_demo(engine)` wires components to mbm; no tensor math lives here."""

from demo import _gradio_import

_gradio_import.install()  # before anything imports gradio: skips its import-time stub upkeep (~2 s)

from demo._gradio_fixes import write_images_atomically  # noqa: E402
from demo.page import build_demo  # noqa: E402

write_images_atomically()  # two visitors getting the same result image must not see it half-written

__all__ = ["build_demo"]
