"""Models: one table of known specs and one factory; see `create_model`."""

from mbm.models._factory import (
    WeightsFileError,
    WeightsUnavailableError,
    create_model,
    default_cache_dir,
    default_model,
    is_cached,
    resolve_device,
    resolve_precision,
)
from mbm.models._registry import ASSETS, KNOWN_MODELS, list_models
from mbm.models.encoder import Encoder

__all__ = ["ASSETS", "Encoder", "KNOWN_MODELS", "WeightsFileError", "WeightsUnavailableError", "create_model",
           "default_cache_dir", "default_model", "is_cached", "list_models", "resolve_device", "resolve_precision"]
