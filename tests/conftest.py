"""Shared fixtures. Tests never touch the network: the hub is switched off before anything imports it."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def shapes_model():
    """The shipped embedded model, loaded once for the whole session (CPU, fp32)."""
    from mbm.models import create_model
    return create_model("mbm-shapes", device="cpu")


@pytest.fixture(scope="session")
def engine(shapes_model, tmp_path_factory):
    """An engine on the built-in gallery with the embedded model; its store lives in a temporary cache."""
    from mbm.engine import Engine, EngineConfig
    engine = Engine(EngineConfig(cache_dir=str(tmp_path_factory.mktemp("cache"))), encoder=shapes_model)
    assert len(engine.gallery) > 300  # opening it indexes it
    return engine
