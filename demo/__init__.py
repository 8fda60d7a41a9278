"""The Gradio page. `build_demo(encoder)` wires components to mbm; no tensor math lives here."""

from demo.page import build_demo

__all__ = ["build_demo"]
