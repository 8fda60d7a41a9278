"""Models: one table of known specs, their loaders by scheme, and one factory; see `create_model`."""

from mbm.models._device import resolve_device, resolve_precision
from mbm.models._factory import create_model, default_cache_dir, default_model, is_cached
from mbm.models._registry import ASSETS, KNOWN_MODELS, Spec, list_models, parse_spec
from mbm.models._weights import WeightsFileError, WeightsUnavailableError
from mbm.models.encoder import Encoder

__all__ = ["ASSETS", "Encoder", "KNOWN_MODELS", "Spec", "WeightsFileError", "WeightsUnavailableError", "create_model",
           "default_cache_dir", "default_model", "is_cached", "list_models", "parse_spec", "resolve_device",
           "resolve_precision"]
