"""Gradio components of the page's own: Gradio's, with checks a stranger's API call needs.

Gradio writes a type stub (`components.pyi`) beside any module that defines a component, on its first import; it is
derived from this file, so git ignores it.
"""

from __future__ import annotations

import gradio as gr

from demo.common import number, quiet, read_image


class Slider(gr.Slider):
    """A `gr.Slider` whose value is checked before the handler sees it: an API call that sends None, text, NaN or
    infinity is told what to send (Gradio's own check compares and fails with a bare "Error")."""
    is_template = True  # the page draws it as a plain slider

    def preprocess(self, payload):
        step_is_whole = float(self.step or 1).is_integer() and float(self.minimum or 0).is_integer()
        value = number(payload, f"{self.label or 'This value'}", self.minimum, self.maximum, integer=step_is_whole)
        return super().preprocess(value)


COLOURS = {"black": "#000000", "red": "#dc2828", "orange": "#f08c1e", "yellow": "#f0d21e", "green": "#28a03c",
           "blue": "#2850dc", "purple": "#8c3cc8", "pink": "#f06eaa", "brown": "#8b5a2b"}  # the shapes world's


class Drawing(gr.ImageEditor):
    """A sketchpad to draw a query on: strokes in the shapes world's colours on a white canvas; the handler gets the
    picture as a file path (strokes flattened on white). A picture Gradio cannot open is a gr.Error that says so."""
    is_template = True  # the page draws it as Gradio's image editor

    def __init__(self, **kwargs):
        brush = gr.Brush(colors=list(COLOURS.values()), default_color=COLOURS["red"], color_mode="defaults",
                         default_size=12)
        super().__init__(type="filepath", sources=(), brush=brush, canvas_size=(400, 400), transforms=(),
                         layers=False, image_mode="RGBA", **kwargs)

    def get_config(self, cls=None):
        return super().get_config(cls or gr.ImageEditor)  # its settings are the editor's, not this __init__'s

    def preprocess(self, payload):
        try:
            return super().preprocess(payload)
        except Exception as e:  # a script's file that is not a picture, or a decompression bomb
            raise quiet(gr.Error(f"That drawing could not be read ({type(e).__name__}). Draw on the canvas, or send "
                                 "a PNG as the drawing's composite."), "a drawing") from None


class Picture(gr.Image):
    """A `gr.Image` for visitors' uploads. Its value reaches the handler as a file path, which `read_image` decodes
    with mbm's loader (EXIF orientation, 16-bit and CMYK scaled, transparency on white, first frame of an animation).
    A file Gradio itself cannot open (empty, not an image, a decompression bomb) becomes a gr.Error that says what is
    wrong with it, instead of Gradio's message that the app "has raised an exception"."""
    is_template = True  # the page draws it as Gradio's image

    def __init__(self, **kwargs):
        super().__init__(type="filepath", image_mode=None, **kwargs)

    def get_config(self, cls=None):
        return super().get_config(cls or gr.Image)  # its settings are the image's, not this __init__'s

    def preprocess(self, payload):
        try:
            return super().preprocess(payload)  # opens the file with Pillow to check its mode
        except gr.Error:
            raise
        except Exception:
            read_image(payload.path, getattr(payload, "orig_name", None))  # raises the gr.Error that says why
            return str(payload.path)  # mbm's loader reads what Pillow's plain open could not


class Choice(gr.Radio):
    """A `gr.Radio` of the options that work here. An API call naming one that does not (`missing`: option -> the
    sentence saying why, e.g. what to install) is told so, not Gradio's "not in the list of choices"."""
    is_template = True  # the page draws it as Gradio's radio

    def __init__(self, choices: list[str], missing: dict[str, str] | None = None, **kwargs):
        super().__init__(choices, **kwargs)
        self.missing = missing or {}

    def get_config(self, cls=None):
        return super().get_config(cls or gr.Radio)  # its settings are the radio's, not this __init__'s

    def preprocess(self, payload):
        if payload in self.missing:
            raise gr.Error(self.missing[payload])
        return super().preprocess(payload)
