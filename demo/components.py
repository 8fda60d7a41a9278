"""Gradio components of the page's own: Gradio's, with checks a stranger's API call needs.

Gradio writes a type stub (`components.pyi`) beside any module that defines a component, on its first import; it is
derived from this file, so git ignores it.
"""

from __future__ import annotations

import gradio as gr

from demo.common import number


class Slider(gr.Slider):
    """A `gr.Slider` whose value is checked before the handler sees it: an API call that sends None, text, NaN or
    infinity is told what to send (Gradio's own check compares and fails with a bare "Error")."""
    is_template = True  # the page draws it as a plain slider

    def preprocess(self, payload):
        step_is_whole = float(self.step or 1).is_integer() and float(self.minimum or 0).is_integer()
        value = number(payload, f"{self.label or 'This value'}", self.minimum, self.maximum, integer=step_is_whole)
        return super().preprocess(value)
