"""The Gradio page. `build_demo(engine)` wires components to mbm; no tensor math lives here."""

from demo._gradio_fixes import write_images_atomically
from demo.page import build_demo

write_images_atomically()  # two visitors getting the same result image must not see it half-written

__all__ = ["build_demo"]
