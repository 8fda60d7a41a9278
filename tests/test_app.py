"""`python app.py` as a person starts it, hit over HTTP by gradio_client."""

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from mbm.data.shapes import SHAPES, make_scene, render

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    port = _free_port()
    cache = tmp_path_factory.mktemp("cache")
    proc = subprocess.Popen([sys.executable, "app.py", "--port", str(port)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False",
                                 "MBM_CACHE": str(cache)})
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"app.py exited early:\n{proc.stdout.read()}")
        try:
            urllib.request.urlopen(url, timeout=2)
            break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("app.py did not answer within 120 s")
    yield url
    proc.terminate()
    proc.wait(timeout=30)


def test_page_names_the_serving_model(server):
    html = urllib.request.urlopen(server, timeout=10).read().decode()
    assert "mbm-shapes" in html


def test_classify_endpoint_finds_the_shape(server, tmp_path):
    client = Client(server, verbose=False)
    hits = 0
    for i in range(5):
        scene = make_scene("test", 500 + i, n_objects=1)
        path = tmp_path / f"scene{i}.png"
        render(scene, 256).save(path)
        result = client.predict(handle_file(str(path)), ", ".join(SHAPES), api_name="/classify")
        assert len(result["confidences"]) == 5
        hits += result["label"] == scene.objects[0].shape
    assert hits >= 4


@pytest.mark.parametrize("labels, message", [("", "at least two labels"), ("star", "at least two labels")])
def test_bad_labels_get_a_clear_message(server, tmp_path, labels, message):
    path = tmp_path / "x.png"
    render(make_scene("test", 1), 64).save(path)
    with pytest.raises(AppError, match=message):
        Client(server, verbose=False).predict(handle_file(str(path)), labels, api_name="/classify")


def test_missing_image_gets_a_clear_message(server):
    with pytest.raises(AppError, match="Drop an image"):
        Client(server, verbose=False).predict(None, "a, b", api_name="/classify")
