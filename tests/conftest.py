"""Shared fixtures. Tests never touch the network: the hub is switched off before anything imports it."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def shapes_model():
    """The shipped embedded model, loaded once for the whole session (CPU, fp32)."""
    from mbm.models import create_model
    return create_model("mbm-shapes", device="cpu")
