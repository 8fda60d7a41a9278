"""The Gradio page. `build_demo(engine)` wires components to mbm; no tensor math lives here."""

from demo.page import build_demo

__all__ = ["build_demo"]
