"""kill -9 of `python app.py`, then a restart on the same folder and cache: nothing lost, nothing duplicated.

Real processes, real SIGKILLs: while the gallery is being embedded, in the middle of writing the FAISS file, and
while a visitor's uploads sit in their session folder. The tests share one gallery folder and cache, and hand a
running app on to the next test where they can, so the whole file starts app.py five times.
"""

import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import faiss
import pytest
from conftest import ROOT, free_port, start_app, stop_app
from gradio_client import Client, handle_file

from mbm.data.language import describe
from mbm.data.sample import write_scenes
from mbm.data.shapes import make_scene, render
from mbm.index import Index

N = 1000  # images in the gallery: embedding them takes a few seconds, long enough to be killed half-way
PHOTOS = sorted((ROOT / "assets" / "gallery" / "photos").glob("*.jpg"))

# A child that runs app.main() with faiss.write_index replaced (as mbm.index sees it) by one that writes half of
# the real bytes to the temp file it was given, then kills its own process: a crash in the middle of a save.
DIE_WHILE_SAVING = """
import os, signal, sys
import mbm.index

faiss = mbm.index.faiss
real_write_index = faiss.write_index

def write_half_then_die(index, path):
    writer = faiss.VectorIOWriter()
    real_write_index(index, writer)
    data = faiss.vector_to_array(writer.data).tobytes()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])
        f.flush()
        os.fsync(f.fileno())
    os.kill(os.getpid(), signal.SIGKILL)

faiss.write_index = write_half_then_die
import app
app.main(sys.argv[1:])
"""


class Site:
    """One gallery folder and one MBM_CACHE under `base`, and the app.py currently serving them (if any)."""

    def __init__(self, base: Path):
        self.base, self.folder, self.cache = base, base / "gallery", base / "cache"
        self.proc: subprocess.Popen | None = None
        self.server = None
        self.others: list[subprocess.Popen] = []  # processes started by hand, killed at teardown if alive

    def env(self) -> dict:
        return {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False",
                "MBM_CACHE": str(self.cache)}

    def serve(self):
        """The running app, or a fresh one (start_app waits until it answers HTTP)."""
        if self.proc is None or self.proc.poll() is not None:
            self.proc, self.server = start_app(self.base, "--gallery", str(self.folder),
                                               env={"MBM_CACHE": str(self.cache)})
        return self.server

    def stop(self) -> None:
        if self.proc is not None:
            stop_app(self.proc)
        self.proc = self.server = None

    def kill9(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        assert self.proc.wait(timeout=30) == -signal.SIGKILL
        self.proc = self.server = None

    def files(self) -> list[str]:
        return sorted(p.name for p in self.folder.glob("*.png"))

    def store(self) -> Path:
        stores = list((self.cache / "galleries").glob("gallery-*"))
        assert len(stores) == 1, stores
        return stores[0]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    site = Site(tmp_path_factory.mktemp("crash"))
    write_scenes(site.folder, n=N, size=64)
    yield site
    site.stop()
    for proc in site.others:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def read_only(db: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)


def embedded(cache: Path) -> int:
    """Image vectors committed so far in the gallery's SQLite (0 while it does not exist yet)."""
    dbs = list((cache / "galleries").glob("*/gallery.sqlite"))
    if not dbs:
        return 0
    try:
        con = read_only(dbs[0])
        try:
            return con.execute("SELECT COUNT(*) FROM vectors WHERE kind='image'").fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error:  # not created yet, or its tables not yet
        return 0


def assert_whole(site: Site, n: int) -> None:
    """What a visitor, the store and the saved index say about the gallery: the folder's `n` files, each once.

    /search_items returns at most 100 rows (demo/search_tab.py MAX_K), so the whole set is checked on the store and
    on the FAISS file the app saved; a visitor's search is checked for duplicates and foreign files."""
    files = site.files()
    assert len(files) == n
    client = Client(site.server.url, verbose=False)
    try:
        rows = client.predict("a shape", 100, -1.0, api_name="/search_items")
        assert len(rows) == 100
        assert len({r["id"] for r in rows}) == 100 and len({r["file"] for r in rows}) == 100
        assert {r["file"] for r in rows} <= set(files)
        info = client.predict(api_name="/gallery_info")
        assert "server's gallery" in info and f"**{n}** images" in info
    finally:
        client.close()
    con = read_only(site.store() / "gallery.sqlite")
    try:
        one = lambda sql: con.execute(sql).fetchone()[0]
        assert sorted(path for path, in con.execute("SELECT path FROM items")) == files  # each file once
        assert one("SELECT COUNT(*) FROM items WHERE error IS NOT NULL") == 0
        assert one("SELECT COUNT(*) FROM vectors WHERE kind='image'") == n
        assert one("SELECT COUNT(DISTINCT item_id) FROM vectors WHERE kind='image'") == n
        assert one("SELECT COUNT(*) FROM vectors WHERE kind='caption'") == n
        ids = sorted(i for i, in con.execute("SELECT id FROM items"))
    finally:
        con.close()
    [saved] = (site.store() / "index").glob("*.faiss")  # one index, the current one
    index = Index.load(saved)
    assert len(index) == n and sorted(faiss.vector_to_array(index._index.id_map).tolist()) == ids


def test_killed_while_embedding_the_gallery_a_restart_finishes_it_with_nothing_twice(site):
    log = site.base / "first.log"
    with open(log, "w") as out:  # not start_app: the app embeds the gallery before it serves anything
        first = subprocess.Popen([sys.executable, "app.py", "--gallery", str(site.folder), "--port", str(free_port())],
                                 cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=site.env())
    site.others.append(first)
    deadline = time.time() + 120
    while embedded(site.cache) == 0:
        assert first.poll() is None, log.read_text()
        assert time.time() < deadline, f"no image was embedded within 120 s:\n{log.read_text()}"
        time.sleep(0.02)
    os.kill(first.pid, signal.SIGKILL)
    assert first.wait(timeout=30) == -signal.SIGKILL
    done = embedded(site.cache)
    assert 0 < done < N, f"the kill did not land mid-way: {done} of {N} embedded"

    site.serve()

    assert_whole(site, N)
    synced = re.search(r"synced .*", site.server.log.read_text()).group(0)
    assert "0 added" in synced and f"{N - done} images encoded" in synced  # resumed: the rest, and only the rest


def test_killed_while_saving_the_index_a_restart_rebuilds_it_and_drops_the_torn_file(site):
    site.stop()  # the store must have one writer: the app of the test before, if any, goes first
    for i in range(5):  # new images, so the app has a new index to save
        scene = make_scene("test", 5000 + i)
        render(scene, 64).save(site.folder / f"late-{i}.png")
        (site.folder / f"late-{i}.txt").write_text(describe(scene) + "\n")
    galleries = site.cache / "galleries"
    before = {p.name for p in galleries.glob("*/index/*.faiss")}
    log = site.base / "dying.log"
    with open(log, "w") as out:
        child = subprocess.Popen([sys.executable, "-c", DIE_WHILE_SAVING, "--gallery", str(site.folder),
                                  "--port", str(free_port())], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                 env=site.env())
        site.others.append(child)
        assert child.wait(timeout=180) == -signal.SIGKILL, log.read_text()
    torn = list(galleries.glob("*/index/.*.tmp"))
    assert len(torn) == 1 and torn[0].stat().st_size > 0  # half an index, under its temp name
    assert {p.name for p in galleries.glob("*/index/*.faiss")} == before  # no final file was written

    site.serve()

    assert_whole(site, N + 5)
    synced = re.search(r"synced .*", site.server.log.read_text()).group(0)
    assert "0 added" in synced and "0 images encoded" in synced  # the dead process had committed its embeddings
    assert not list(galleries.glob("*/index/.*.tmp"))  # the torn temp file is gone
    assert len(list(galleries.glob("*/index/*.faiss"))) == 1


def test_uploads_of_a_killed_app_are_removed_at_the_next_start(site):
    server = site.serve()  # the app the test before left running, else a new one
    n = len(site.files())
    sessions = site.cache / "sessions"
    listing = lambda: {p for p in sessions.glob("*/*") if p.is_dir()}  # sessions/<the app's space>/<session>
    before = listing()
    visitor = Client(server.url, verbose=False)
    _, summary, _ = visitor.predict([handle_file(str(p)) for p in PHOTOS[:3]], api_name="/index_uploads")
    assert "**3** searchable images" in summary
    [orphan] = listing() - before
    assert len(list((orphan / "images").iterdir())) == 3

    site.kill9()
    visitor.close()
    assert (orphan / "images").is_dir()  # nobody was left to remove it

    server = site.serve()

    assert not orphan.exists()
    assert not listing()
    assert "1 stale session folders removed" in server.log.read_text()
    assert_whole(site, n)  # and the server's gallery answers as before
