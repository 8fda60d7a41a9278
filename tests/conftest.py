"""Shared fixtures. Tests never touch the network: the hub is switched off before anything imports it, and its
cache is a fresh empty folder, so what this machine happens to have cached changes no test (nor the model an
app.py started by a test chooses to serve)."""

import os
import tempfile

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="mbm-test-hf-home-")

import subprocess  # noqa: E402
import sys  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import _synthetic  # noqa: E402  one way to start and stop app.py, shared with the benchmarks
from _synthetic import free_port, stop_app  # noqa: E402, F401  (tests import them from here)


@pytest.fixture(scope="session")
def shapes_model():
    """The shipped embedded model, loaded once for the whole session (CPU, fp32)."""
    from mbm.models import create_model
    return create_model("mbm-shapes", device="cpu")


@pytest.fixture(scope="session")
def engine(shapes_model, tmp_path_factory):
    """An engine with `mbm-shapes` on the shapes-world part of the built-in gallery (its scenes and photos, as
    the gallery was before emoji joined it: what that model was made for), copied with the gallery's shipped
    vectors; its store lives in a temporary cache."""
    import shutil

    from mbm.engine import Engine, EngineConfig
    gallery = tmp_path_factory.mktemp("shapes-gallery")
    for part in ("scenes", "photos", ".vectors"):
        shutil.copytree(ROOT / "assets" / "gallery" / part, gallery / part)
    config = EngineConfig(gallery=str(gallery), cache_dir=str(tmp_path_factory.mktemp("cache")))
    engine = Engine(config, encoder=shapes_model)
    assert len(engine.gallery) == 307  # opening it indexes it
    return engine


@dataclass
class Server:
    url: str
    cache: Path  # the app's MBM_CACHE: gallery stores and session folders
    log: Path
    pid: int = 0  # the app's process


def run_mbm(*args: str, timeout: float = 600, wrapper: list[str] | None = None) -> subprocess.CompletedProcess:
    """`python -m mbm ARGS` as a person runs it (offline), optionally under a `wrapper` command such as setpriv."""
    return subprocess.run([*(wrapper or []), sys.executable, "-m", "mbm", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "HF_HUB_OFFLINE": "1"})


def start_app(folder: Path, *args: str, env: dict | None = None) -> tuple[subprocess.Popen, Server]:
    """`python app.py ARGS` on a free port with its own MBM_CACHE under `folder` (or `env`'s), once it answers HTTP:
    the benchmarks' way (`benchmarks/_synthetic.start_app`), with a test failure instead of an exit."""
    cache = Path((env or {}).get("MBM_CACHE") or folder / "cache")
    log = folder / "app.log"
    try:
        proc, url, _ = _synthetic.start_app(list(args), cache, log, timeout=120, env=env)
    except SystemExit as e:
        pytest.fail(str(e))
    return proc, Server(url, cache, log, proc.pid)


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """`python app.py` as a person starts it, on a free port, with its own cache; shared by the page tests."""
    proc, server = start_app(tmp_path_factory.mktemp("app"))
    yield server
    stop_app(proc)


@pytest.fixture(scope="session")
def strict_server(tmp_path_factory):
    """app.py as on a public host (listening on every address, so no folder indexing and no `@file` queries), with
    tiny limits to reach them cheaply: 2 waiting requests, 1 MB uploads, 64 KB request bodies, 300 KB and 20 files of
    uploads per visitor, visitors' uploads swept after 7.2 s untouched, or 1.2 s when no page of theirs is open (the
    sweep runs every 0.6 s)."""
    proc, server = start_app(tmp_path_factory.mktemp("strict-app"), "--host", "0.0.0.0", "--queue-size", "2",
                             "--max-upload-mb", "1", "--session-hours", "0.002", "--session-idle-minutes", "0.02",
                             "--session-quota-mb", "0.3", "--session-max-files", "20", "--max-request-kb", "64")
    yield server
    stop_app(proc)


@pytest.fixture()
def client(server):
    """A fresh gradio_client visitor of the app (its own session)."""
    from gradio_client import Client
    return Client(server.url, verbose=False)
