"""Many visitors at once, and visitors past the queue limit, against real `python app.py` servers.

Only correctness here: every request answered, every answer right, every visitor's uploads their own, and a
clear "busy, try again" past the queue limit. How fast is `benchmarks/bench_visitors.py`'s business.

Clients use `ssl_verify=False`: the servers are plain HTTP on loopback, so nothing is verified either way, and
otherwise gradio_client builds a fresh certificate store for every request (tens of ms of CPU under the GIL),
which on a small machine makes 20 client threads, not the app, the bottleneck.
"""

from __future__ import annotations

import random
import re
import string
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest
from gradio_client import Client, handle_file
from gradio_client.utils import QueueError
from PIL import Image

from mbm.data.shapes import make_scene, render

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "assets" / "examples"
SCENES = sorted((ROOT / "assets" / "gallery" / "scenes").glob("*.png"))[::75]
SESSIONS = 20
SECONDS = 10  # how long the visitors keep going, after all of them connected
K = 12
QUERIES = ["a red circle", "two blue squares", "a small green triangle", "a large yellow star", "a purple heart",
           "three shapes", "a white cross on the left", "a photo of a cat", "red circle - blue"]
CLASSIFY = [("red-circle.png", "circle, square, triangle, star", "a photo of a {}.\na {}.", "circle"),
            ("purple-heart.png", "heart\nstar\ncross", "a photo of a {}.\na drawing of a {}.", "heart"),
            ("yellow-triangle.png", "yellow triangle, yellow circle, blue triangle, blue circle", "a {}.",
             "yellow triangle")]
MIX = {"text": 45, "image": 15, "classify": 25, "upload": 15}
# in the names of uploaded files: Gradio keeps uploads by content and name, shared by every session and every
# app.py using the same temp folder; unique names keep one run's visitors apart from another's
RUN = "".join(random.choices(string.ascii_lowercase, k=6))


def visitor(url: str, downloads: Path | None = None) -> Client:
    """A new browser tab: its own gradio_client session; with `downloads`, it fetches result images as a browser
    does (into that folder)."""
    return Client(url, verbose=False, analytics_enabled=False, ssl_verify=False,
                  download_files=str(downloads) if downloads else False)


def scores(tiles: list[dict]) -> list[float]:
    return [float(t["caption"].split(" · ")[0]) for t in tiles]


class Session:
    """One visitor doing what `MIX` draws; each method raises AssertionError on a wrong answer."""

    def __init__(self, url: str, sid: int, folder: Path) -> None:
        self.sid, self.folder, self.rng = sid, folder, random.Random(sid)
        self.client = visitor(url, folder / "downloads")
        self.uploads = 0
        self.own: set[str] = set()  # captions of this visitor's uploaded images

    def search(self, text, image, k: int) -> tuple[list[dict], str]:
        tiles, _, timing, _ = self.client.predict(text, image, 1.0, k, -0.2, api_name="/search")
        assert scores(tiles) == sorted(scores(tiles), reverse=True), f"scores not sorted: {scores(tiles)}"
        for t in tiles:  # every result image arrived whole, although other visitors got the same ones at once
            with Image.open(t["image"]) as im:
                im.load()
        return tiles, timing

    def text(self) -> None:
        tiles, _ = self.search(self.rng.choice(QUERIES), None, K)
        assert len(tiles) == K, f"{len(tiles)} results instead of {K}"

    def image(self) -> None:
        path = self.rng.choice(SCENES)
        tiles, _ = self.search(None, handle_file(str(path)), K)
        assert len(tiles) == K, f"{len(tiles)} results instead of {K}"
        own = path.with_suffix(".txt").read_text().strip()
        assert own in tiles[0]["caption"], f"{path.name}: top result {tiles[0]['caption']!r}, not {own!r}"

    def classify(self) -> None:
        image, labels, templates, expected = self.rng.choice(CLASSIFY)
        label, table, _ = self.client.predict(handle_file(str(EXAMPLES / image)), labels, templates,
                                              api_name="/classify")
        total = sum(c["confidence"] for c in label["confidences"])
        assert total == pytest.approx(1.0, abs=1e-3), f"{image}: probabilities sum to {total}"
        assert label["label"] == expected, f"{image}: {label['label']!r}, expected {expected!r}"
        assert len(table["value"]["data"]) == len(templates.splitlines())

    def upload(self) -> None:
        """1-3 small PNGs into this visitor's own gallery, then a search there, then back to the server's."""
        self.uploads += 1
        files, names = [], set()
        for j in range(self.rng.randint(1, 3)):
            name = f"visitor{self.sid:02d}-{RUN}-upload{self.uploads}-img{j}"
            render(make_scene("test", self.sid * 1000 + self.uploads * 10 + j), 96).save(self.folder / f"{name}.png")
            files.append(handle_file(str(self.folder / f"{name}.png")))
            names.add(name.replace("-", " "))  # its caption, as the gallery reads it from the file name
        info, summary, _ = self.client.predict(files, api_name="/index_uploads")
        self.own |= names
        assert "your uploads" in info and f"**{len(self.own)}** searchable images" in summary, summary
        tiles, timing = self.search("a shape", None, 48)
        seen = {t["caption"].split(" · ", 1)[1] for t in tiles}
        assert seen == self.own, f"own gallery shows {sorted(seen)}, uploaded {sorted(self.own)}"
        assert re.search(rf"of {len(self.own)} images", timing), timing  # the whole gallery searched: only these
        assert "server's gallery" in self.client.predict(api_name="/use_server_gallery")[0]


def test_twenty_visitors_at_once_all_get_right_answers(server, tmp_path):
    """20 sessions at once for about 10 s, searching by text and image, classifying and uploading: no request
    fails, every answer is right, and every visitor's own gallery holds exactly its own uploads."""
    results: list[tuple[int, str, str | None]] = []  # (visitor, action, None or what went wrong)
    deadline = [0.0]
    start = threading.Barrier(SESSIONS, action=lambda: deadline.__setitem__(0, time.monotonic() + SECONDS),
                              timeout=120)  # the clock starts once every visitor has connected

    def run(sid: int) -> None:
        folder = tmp_path / f"visitor{sid:02d}"
        folder.mkdir()
        try:
            session = Session(server.url, sid, folder)
        except Exception as exc:
            results.append((sid, "connect", f"{type(exc).__name__}: {exc}"))
            start.abort()
            return
        try:
            start.wait()
            first = "upload" if sid % 4 == 0 else None  # some visitors upload first thing, others by chance
            while True:  # at least one request each, then until the deadline
                action = first or session.rng.choices(list(MIX), list(MIX.values()))[0]
                first = None
                try:
                    getattr(session, action)()
                    results.append((sid, action, None))
                except Exception as exc:
                    results.append((sid, action, f"{type(exc).__name__}: {exc}"))
                if time.monotonic() >= deadline[0]:
                    break
        except threading.BrokenBarrierError:  # another visitor could not connect: reported as its failure
            pass
        finally:
            session.client.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(SESSIONS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    failures = [f"visitor {sid} {action}: {error}" for sid, action, error in results if error]
    assert not failures, f"{len(failures)} of {len(results)} requests failed:\n" + "\n".join(failures)
    assert {sid for sid, _, _ in results} == set(range(SESSIONS))  # every visitor was served
    done = {action: sum(a == action for _, a, _ in results) for action in MIX}
    assert all(done.values()), done  # the mix really mixed
    assert done["upload"] >= SESSIONS // 4


def test_visitors_past_the_queue_limit_are_told_to_try_again(strict_server, tmp_path):
    """strict_server lets 2 requests wait; indexing runs one at a time. 12 visitors index at the same moment."""
    n = 12
    config = httpx.get(strict_server.url + "config", timeout=30).json()
    gallery_info = next(d["id"] for d in config["dependencies"] if d.get("api_name") == "gallery_info")
    outcomes: list[tuple[str, str]] = []  # ("accepted", summary) | ("refused", message) | ("error", what)
    probes: list[httpx.Response] = []
    gate = threading.Barrier(n + 1, timeout=120)
    refused, flood_over = threading.Event(), threading.Event()

    def index(i: int) -> None:
        files = []
        for j in range(3):
            path = tmp_path / f"flood{i:02d}-{RUN}-img{j}.png"
            render(make_scene("val", i * 10 + j), 128).save(path)
            files.append(handle_file(str(path)))
        client = visitor(strict_server.url)
        gate.wait()
        try:
            _, summary, _ = client.predict(files, api_name="/index_uploads")
            outcomes.append(("accepted", summary))
        except QueueError as exc:
            refused.set()
            outcomes.append(("refused", str(exc)))
        except Exception as exc:
            outcomes.append(("error", f"{type(exc).__name__}: {exc}"))
        finally:
            client.close()

    def probe() -> None:
        """Plain HTTP, as any script joins the queue: once a visitor was refused, until one answer says full."""
        with httpx.Client(timeout=30) as http:
            gate.wait()
            refused.wait(timeout=60)
            while not flood_over.is_set() and not any(r.status_code == 503 for r in probes):
                probes.append(http.post(strict_server.url + "gradio_api/queue/join", json={
                    "data": [None], "fn_index": gallery_info, "session_hash": uuid.uuid4().hex[:11],
                    "event_data": None, "trigger_id": None}))

    threads = [threading.Thread(target=index, args=(i,)) for i in range(n)]
    prober = threading.Thread(target=probe)
    for t in [*threads, prober]:
        t.start()
    for t in threads:
        t.join()
    flood_over.set()
    prober.join()

    errors = [what for kind, what in outcomes if kind == "error"]
    assert not errors and len(outcomes) == n, errors
    messages = [what for kind, what in outcomes if kind == "refused"]
    assert messages, "nobody was refused: the queue limit was never reached"
    assert all(re.search(r"Queue is full.*try again", m, re.I) for m in messages), messages
    accepted = [what for kind, what in outcomes if kind == "accepted"]
    assert accepted  # the first in line is always served
    for summary in accepted:  # each accepted visitor is a fresh session: exactly its 3 images
        assert "3 images added" in summary and "indexed 3 new images" in summary, summary
        assert "**3** searchable images" in summary, summary

    # Gradio's own answer to a plain join while full: 503 with a reason (gradio_client turns it into QueueError)
    full = [r for r in probes if r.status_code == 503]
    assert full, f"every plain join was accepted: {[(r.status_code, r.text) for r in probes]}"
    assert re.fullmatch(r"Queue is full\. Max size is 2 and size is \d+\.", full[0].json()["detail"])
    assert all(r.status_code == 200 and "event_id" in r.json() for r in probes if r.status_code != 503)

    tiles, *_ = visitor(strict_server.url).predict("a red circle", None, 1.0, 6, 0.0, api_name="/search")
    assert len(tiles) == 6 and "red circle" in tiles[0]["caption"]


def test_a_result_image_is_never_seen_half_written(tmp_path):
    """Gradio writes a returned image to a file named by its bytes, rewriting it on every request; mbm makes that
    write a rename (demo._gradio_fixes), so a visitor downloading it while another search returns the same image
    always reads the whole file."""
    from gradio import processing_utils

    import demo  # noqa: F401 - installs the fix, as app.py does

    image = Image.open(EXAMPLES / "scene.png").convert("RGB")
    first = Path(processing_utils.save_pil_to_cache(image, str(tmp_path), format="jpeg"))
    whole = first.read_bytes()
    stop, torn = threading.Event(), []

    def write() -> None:
        while not stop.is_set():
            assert Path(processing_utils.save_pil_to_cache(image, str(tmp_path), format="jpeg")) == first

    def read() -> None:
        for _ in range(3000):
            data = first.read_bytes()
            if data != whole:
                torn.append(len(data))

    writers = [threading.Thread(target=write) for _ in range(3)]
    for t in writers:
        t.start()
    read()
    stop.set()
    for t in writers:
        t.join()
    assert not torn, f"{len(torn)} of 3000 reads saw a partly written file (sizes {sorted(set(torn))[:5]})"
    assert [p.name for p in tmp_path.iterdir()] == [first.parent.name]  # no staging folder left behind
