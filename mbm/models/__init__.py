"""Models: one table of known specs, their loaders by scheme, and one factory; see `create_model`.

The names below load on first use (PEP 562), so `mbm.models._registry` and the torch-free query path
(`mbm.models._query`) import without torch: a one-off query process must not pay for it (issue 19).
"""

from importlib import import_module

_WHERE = {
    "resolve_device": "_device", "resolve_precision": "_device",
    "create_model": "_factory", "default_model": "_registry", "is_cached": "_factory",
    "ASSETS": "_registry", "KNOWN_MODELS": "_registry", "Spec": "_registry", "list_models": "_registry",
    "parse_spec": "_registry", "default_cache_dir": "_registry",
    "WeightsFileError": "_weights", "WeightsUnavailableError": "_weights",
    "Encoder": "encoder",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f"{__name__}.{_WHERE[name]}"), name)
    globals()[name] = value  # once: later lookups do not come back here
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))
