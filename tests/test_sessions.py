"""Visitors of one running app.py: each sees only their own uploads, their files go when their session ends or
lies untouched too long, and Gradio's file route serves none of the host's files nor another session's."""

import hashlib
import os
import re
import shutil
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from mbm.data.shapes import make_scene, render

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = sorted((ROOT / "assets" / "gallery" / "photos").glob("*.jpg"))
GONE = "Your uploaded gallery is gone"


def alice_photos(folder: Path, n: int = 3) -> list[Path]:
    """Copies of real photos under names (hence captions) that appear nowhere in the server's gallery."""
    paths = []
    for i, photo in enumerate(PHOTOS[:n]):
        paths.append(folder / f"alice-private-{i}.jpg")
        shutil.copy(photo, paths[-1])
    return paths


def bob_pngs(folder: Path, n: int = 2, tag: str = "bob-secret") -> list[Path]:
    paths = []
    for i in range(n):
        paths.append(folder / f"{tag}-{i}.png")
        render(make_scene("test", 700 + i), 128).save(paths[-1])
    return paths


def listing(server) -> set[Path]:
    """The visitors' session folders of every app on this cache (each app keeps its own under sessions/<space>/)."""
    return {p for p in (server.cache / "sessions").glob("*/*") if p.is_dir()}


def upload(server, client: Client, files: list[Path]) -> tuple[str, Path]:
    """Index `files` as `client`'s uploads; the summary shown, and the session folder that appeared for them."""
    before = listing(server)
    _, summary, _ = client.predict([handle_file(str(p)) for p in files], api_name="/index_uploads")
    new = listing(server) - before
    assert len(new) == 1, new
    return summary, new.pop()


def captions(tiles: list[dict]) -> set[str]:
    return {t["caption"].split(" · ", 1)[1] for t in tiles}


def wait_gone(path: Path, seconds: float = 30) -> None:
    deadline = time.time() + seconds
    while path.exists() and time.time() < deadline:
        time.sleep(0.2)


def fetch(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_two_visitors_uploading_at_once_each_search_only_their_own(server, tmp_path):
    alice, bob, carol = (Client(server.url, verbose=False) for _ in range(3))
    server_info = carol.predict(api_name="/gallery_info")
    mine = {"alice": alice_photos(tmp_path), "bob": bob_pngs(tmp_path)}
    names = {who: {p.stem.replace("-", " ") for p in paths} for who, paths in mine.items()}  # captions from names
    barrier, results = threading.Barrier(2), {}

    def index(who: str, client: Client) -> None:
        try:
            barrier.wait(timeout=30)
            results[who] = client.predict([handle_file(str(p)) for p in mine[who]], api_name="/index_uploads")
        except Exception as e:  # reported by the assertion below
            results[who] = e

    threads = [threading.Thread(target=index, args=args) for args in (("alice", alice), ("bob", bob))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    try:
        assert not any(isinstance(r, Exception) for r in results.values()), results
        assert "**3** searchable images" in results["alice"][1]
        assert "**2** searchable images" in results["bob"][1]

        theirs = {}
        for who, client in (("alice", alice), ("bob", bob)):
            tiles, *_ = client.predict("a photo of a shape", None, 1.0, 10, -0.2, api_name="/search")
            theirs[who] = captions(tiles)
            assert len(tiles) == len(mine[who]) and theirs[who] == names[who]
            info = client.predict(api_name="/gallery_info")
            assert "your uploads" in info and f"**{len(mine[who])}** images" in info
        assert not theirs["alice"] & theirs["bob"]

        uploaded = names["alice"] | names["bob"]
        assert carol.predict(api_name="/gallery_info") == server_info
        assert "server's gallery" in server_info and int(re.search(r"\*\*(\d+)\*\* images", server_info).group(1)) > 300
        tiles, *_ = carol.predict("alice private bob secret", None, 1.0, 48, -0.2, api_name="/search")
        assert len(tiles) == 48 and not captions(tiles) & uploaded
        rows = carol.predict("alice private bob secret", 100, -1.0, api_name="/search_items")
        assert len(rows) == 100 and not {r["caption"] for r in rows} & uploaded
        assert not any(r["file"].startswith(("alice", "bob")) for r in rows)
    finally:
        for client in (alice, bob, carol):
            client.close()


def test_a_visitors_files_go_when_their_session_ends_and_only_theirs(server, tmp_path):
    alice, bob = Client(server.url, verbose=False), Client(server.url, verbose=False)
    try:
        _, alices = upload(server, alice, alice_photos(tmp_path, 2))
        _, bobs = upload(server, bob, bob_pngs(tmp_path))
        assert len(list((alices / "images").iterdir())) == 2

        alice.close()  # her page is closed: the heartbeat ends and Gradio runs the page's unload handler
        wait_gone(alices)

        assert not alices.exists()
        assert sorted(p.name for p in (bobs / "images").iterdir()) == ["bob-secret-0.png", "bob-secret-1.png"]
        tiles, *_ = bob.predict("a photo of a shape", None, 1.0, 10, -0.2, api_name="/search")
        assert captions(tiles) == {"bob secret 0", "bob secret 1"}
    finally:
        alice.close()
        bob.close()


def test_uploads_left_untouched_are_swept_and_the_visitor_is_told(strict_server, tmp_path):
    client = Client(strict_server.url, verbose=False)
    try:
        files = bob_pngs(tmp_path)
        summary, folder = upload(strict_server, client, files)
        assert "**2** searchable images" in summary and (folder / "images").is_dir()

        wait_gone(folder)  # the page stays open; only the sweep of untouched uploads can remove them

        assert not folder.exists()
        for call in (lambda: client.predict("a shape", None, 1.0, 10, -0.2, api_name="/search"),
                     lambda: client.predict(api_name="/gallery_info")):
            with pytest.raises(AppError) as error:
                call()
            message = str(error.value)
            assert GONE in message and "Upload the images again" in message
            assert "Traceback" not in message and "sessions" not in message and folder.name not in message
        summary, again = upload(strict_server, client, files)
        assert "**2** searchable images" in summary and again == folder  # the same session, a fresh folder
        tiles, *_ = client.predict("a shape", None, 1.0, 10, -0.2, api_name="/search")
        assert captions(tiles) == {"bob secret 0", "bob secret 1"}
    finally:
        client.close()


def test_the_file_route_serves_no_file_of_the_host_or_of_another_session(server, tmp_path):
    victim, visitor = Client(server.url, verbose=False), Client(server.url, verbose=False, download_files=False)
    try:
        image = bob_pngs(tmp_path, 1, tag=f"victim-{uuid.uuid4().hex[:12]}")[0]
        data = image.read_bytes()
        _, folder = upload(server, victim, [image])
        stored = folder / "images" / image.name
        assert stored.read_bytes() == data
        [session_thumb] = (folder / "store" / "thumbs").glob("*/*.jpg")
        [store] = (server.cache / "galleries").glob("gallery-*/gallery.sqlite")  # the built-in gallery's
        server_thumb = next((store.parent / "thumbs").glob("*/*.jpg"))
        gradio_dir = Path(os.environ.get("GRADIO_TEMP_DIR") or Path(tempfile.gettempdir()) / "gradio")
        [real] = gradio_dir.glob(f"*/{image.name}")  # where Gradio put the victim's upload: a seeded hash
        guess = gradio_dir / hashlib.sha256(data).hexdigest() / image.name
        assert real != guess and real.read_bytes() == data

        tiles, *_ = visitor.predict("a red circle", None, 1.0, 3, 0.0, api_name="/search")
        status, body = fetch(f"{server.url}gradio_api/file={urllib.parse.quote(tiles[0]['image']['path'])}")
        assert status == 200 and body[:3] == b"\xff\xd8\xff"  # a well-formed probe reaches a JPEG

        app_py = (ROOT / "app.py").read_bytes()
        probes = {  # what follows file=, and bytes that must not come back
            "/etc/passwd": b"root:",
            urllib.parse.quote(str(ROOT / "app.py")): app_py[:60],
            "app.py": app_py[:60],
            "../../../../etc/passwd": b"root:",
            "%2e%2e%2f%2e%2e%2f%2e%2e%2f%2e%2e%2fetc%2fpasswd": b"root:",
            "..%2f..%2f..%2f..%2fetc%2fpasswd": b"root:",
            urllib.parse.quote(f"{gradio_dir}/../../../etc/passwd"): b"root:",
            urllib.parse.quote(f"{real.parent}/../../../../etc/passwd"): b"root:",
            urllib.parse.quote(str(stored)): data[:64],
            urllib.parse.quote(str(folder / "store" / "gallery.sqlite")): b"SQLite format 3",
            urllib.parse.quote(str(session_thumb)): session_thumb.read_bytes()[:64],
            urllib.parse.quote(str(store)): b"SQLite format 3",
            urllib.parse.quote(str(server_thumb)): server_thumb.read_bytes()[:64],
            urllib.parse.quote(str(guess)): data[:64],
        }
        answers = {probe: fetch(f"{server.url}gradio_api/file={probe}") for probe in probes}
        served = {probe: status for probe, (status, body) in answers.items()
                  if status not in (403, 404) or probes[probe] in body}
        assert not served, f"served: {served}"
    finally:
        victim.close()
        visitor.close()
