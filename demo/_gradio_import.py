"""`import gradio` without its import-time type-stub upkeep: about 40% of the import's CPU time.

Gradio 6 re-derives a `.pyi` type stub for every component class as it defines it
(`gradio.component_meta.create_or_modify_pyi`): it reads each component's source, parses it with `ast` and
compares the result with the stub shipped beside it, which for an installed release never differs. That is
about 2 s of CPU on the 2-core machine of docs/BENCHMARKS.md, on every start of the app. `install()` skips it
for components whose stub exists; a component without one (a Gradio developer's new one) still gets it written.

`install()` must run before gradio is imported (`demo/__init__.py` does it); if gradio is already imported it
does nothing. Nothing else of gradio is touched, and a gradio without that function is imported unchanged.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import inspect
import sys
from pathlib import Path

MODULE = "gradio.component_meta"


def skip_existing_stubs(original):
    """`create_or_modify_pyi` that returns at once when the component's `.pyi` is there, else calls `original`."""
    def create_or_modify_pyi(component_class, class_name, events):
        try:
            if Path(inspect.getfile(component_class)).with_suffix(".pyi").is_file():
                return None  # shipped with the release: re-deriving it only costs time
        except (OSError, TypeError):  # not defined in a file
            pass
        return original(component_class, class_name, events)
    return create_or_modify_pyi


class _Finder(importlib.abc.MetaPathFinder):
    """Finds `gradio.component_meta` the normal way and patches the module right after it runs, then leaves."""

    def find_spec(self, name, path, target=None):
        if name != MODULE:
            return None
        uninstall()
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return None  # an unusual install: let the other finders import it as it is
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            original = getattr(module, "create_or_modify_pyi", None)
            if callable(original):
                module.create_or_modify_pyi = skip_existing_stubs(original)
        spec.loader.exec_module = exec_module  # this loader instance serves this one module only
        return spec


_FINDER = _Finder()


def install() -> bool:
    """Patch gradio's stub upkeep as it is imported; False if it is imported already (nothing to do then)."""
    if MODULE in sys.modules:
        return False
    if _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)
    return True


def uninstall() -> None:
    if _FINDER in sys.meta_path:
        sys.meta_path.remove(_FINDER)
