"""Shared fixtures. Tests never touch the network: the hub is switched off before anything imports it."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import urllib.request  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


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


@dataclass
class Server:
    url: str
    cache: Path  # the app's MBM_CACHE: gallery stores and session folders
    log: Path


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """`python app.py` as a person starts it, on a free port, with its own cache; shared by the page tests."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cache = tmp_path_factory.mktemp("app-cache")
    log = cache.parent / "app.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "app.py", "--port", str(port)], cwd=ROOT, stdout=out,
                                stderr=subprocess.STDOUT, env={**os.environ, "HF_HUB_OFFLINE": "1",
                                                               "GRADIO_ANALYTICS_ENABLED": "False",
                                                               "MBM_CACHE": str(cache)})
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 120
    while True:
        if proc.poll() is not None:
            pytest.fail(f"app.py exited early:\n{log.read_text()}")
        try:
            urllib.request.urlopen(url, timeout=2)
            break
        except OSError:
            if time.time() > deadline:
                proc.kill()
                pytest.fail(f"app.py did not answer within 120 s:\n{log.read_text()}")
            time.sleep(0.3)
    yield Server(url, cache, log)
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture()
def client(server):
    """A fresh gradio_client visitor of the app (its own session)."""
    from gradio_client import Client
    return Client(server.url, verbose=False)
