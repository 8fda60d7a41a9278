"""mbm: a multimodal model demo. The public API is `mbm.Engine` (model + galleries + classifiers),
`mbm.EngineConfig`, and `mbm.create_model` / `mbm.list_models` for the bare encoders.

Names are imported on first use, so `python -m mbm --help` does not pay for torch.
"""

_EXPORTS = {"Engine": "mbm.engine", "EngineConfig": "mbm.engine", "create_model": "mbm.models",
            "list_models": "mbm.models"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'mbm' has no attribute {name!r}")
    import importlib
    return getattr(importlib.import_module(_EXPORTS[name]), name)
