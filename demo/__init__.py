"""The Gradio page. `build_demo(engine)` wires components to mbm; no tensor math lives here."""

from demo import _gradio_import

_gradio_import.install()  # before anything imports gradio: skips its import-time stub upkeep (~2 s)

from demo.page import build_demo  # noqa: E402

__all__ = ["build_demo"]
