"""Past one machine (issue 21): `embed` on a real Dask cluster (two local worker processes on 127.0.0.1, one of them
killed mid-run), shards on disk, `index --from-shards` into a gallery with a compressed FAISS index, and a search
of that gallery through the CLI."""

import json
import os
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT

from mbm.__main__ import main
from mbm.index import CODES_MAX_BYTES, COMPRESS_ABOVE, Index, choose_factory, recall_vs_exact
from mbm.shards import MANIFEST, Entry, Manifest, iter_shards, plan, read_source

pytest.importorskip("distributed")
pytest.importorskip("pyarrow")
TIMEOUT = 240  # seconds any wait on the cluster may take before the test fails instead of hanging
MODEL = "mbm-shapes"


@pytest.fixture(scope="module")
def cluster():
    """A LocalCluster of two worker processes listening on 127.0.0.1, and its client."""
    from mbm.embed import connect
    with connect(None, workers=2, timeout=TIMEOUT) as (client, threads):
        yield client


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """The built-in gallery's 300 shapes scenes (PNG, caption sidecars), a file that is not an image, a hidden one."""
    root = tmp_path_factory.mktemp("scale") / "scenes"
    shutil.copytree(ROOT / "assets" / "gallery" / "scenes", root)
    (root / "broken.png").write_bytes(b"not a png at all")
    (root / ".hidden.png").write_bytes((root / "scene-000.png").read_bytes())
    return root


@pytest.fixture(scope="module")
def shards(cluster, folder, tmp_path_factory):
    """`embed` of the folder into shards of ~8 images, one of the two workers SIGKILLed once the first shard is
    done; then the same run again. Returns (out, first report, second report, what the kill saw, files before)."""
    from mbm.embed import embed
    out = tmp_path_factory.mktemp("shards")
    pids = cluster.run(os.getpid)  # {worker address: pid}
    kill = {}

    def progress(done: int, total: int, what: str) -> None:
        if not kill:  # the first shard is written: kill a worker that has tasks in hand
            busy = [w for w, keys in cluster.processing().items() if keys and w in pids] or list(pids)
            kill.update(worker=busy[0], shards_on_disk=len(list(out.glob("*.parquet"))), todo=total)
            os.kill(pids[busy[0]], signal.SIGKILL)

    first = embed(folder, out, cluster, MODEL, shard_size=8, threads=1, progress=progress, timeout=TIMEOUT)
    files = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    second = embed(folder, out, cluster, MODEL, shard_size=8, threads=1, timeout=TIMEOUT)
    return out, first, second, kill, files


def test_cluster_listens_on_loopback_only(cluster):
    addresses = [cluster.scheduler.address, *cluster.scheduler_info()["workers"]]
    assert len(addresses) == 3 and all(a.startswith("tcp://127.0.0.1:") for a in addresses)


def test_killed_worker_leaves_every_image_exactly_once(shards, folder):
    out, report, _, kill, _ = shards
    assert kill and kill["shards_on_disk"] < kill["todo"] - 2  # the kill came with most of the work still to do
    manifest = Manifest.read(out)
    rows = [r for rows, _, _ in iter_shards(out, manifest) for r in rows]
    counts = Counter(r["path"] for r in rows)
    expected = {p.name for p in folder.iterdir() if p.suffix == ".png" and not p.name.startswith(".")}
    assert set(counts) == expected and set(counts.values()) == {1}  # 301 files, each once
    assert sorted(p.name for p in out.glob("*.parquet")) == sorted(manifest.shards)  # no second copy of a shard
    assert not list(out.glob(".*.tmp"))
    assert report.images == manifest.items == 301 and report.written + report.skipped <= report.shards
    broken = [r for r in rows if r["path"] == "broken.png"]
    assert broken[0]["error"] and broken[0]["sha256"] is None
    assert all(r["error"] is None and r["caption"] for r in rows if r["path"] != "broken.png")


def test_rerun_skips_every_shard_and_writes_nothing(shards):
    out, first, second, _, files = shards
    assert second.written == 0 and second.encoded == 0 and second.skipped == second.shards == first.shards
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.name != MANIFEST} == \
           {k: v for k, v in files.items() if k != MANIFEST}


def test_shard_vectors_equal_a_sync_of_the_same_files(shards, folder, shapes_model, tmp_path):
    """The workers read files as the gallery's sync does: the same image and caption vectors, to float noise."""
    from mbm.gallery import Gallery
    out = shards[0]
    names = [f"scene-{i:03d}" for i in (0, 7, 123)]
    small = tmp_path / "small"
    small.mkdir()
    for name in names:
        for suffix in (".png", ".txt"):
            shutil.copy2(folder / f"{name}{suffix}", small / f"{name}{suffix}")
    gallery = Gallery(small, shapes_model, store=tmp_path / "store")
    gallery.sync()
    synced = {it.path: v for it, v in zip(gallery.items(gallery.vectors()[0]), gallery.vectors()[1])}
    for rows, images, _ in iter_shards(out, Manifest.read(out)):
        for row, vector in zip(rows, images):
            if row["path"] in synced:
                np.testing.assert_allclose(vector, synced.pop(row["path"]), atol=1e-5)
    assert not synced


def test_from_shards_builds_a_compressed_index_the_cli_searches(shards, folder, shapes_model, tmp_path, capsys):
    """`index --from-shards` fills the gallery's store and builds the compressed index (asked for from 100 images
    on); its recall@10 against exact search, measured with the captions as queries, and its size are printed. A
    search through the CLI finds an image by its own file; a sync afterwards has nothing to embed."""
    from mbm.engine import Engine, EngineConfig
    from mbm.gallery import Gallery
    cache = str(tmp_path / "cache")
    assert main(["index", "--from-shards", str(shards[0]), "--compress-above", "100", "--cache", cache, "--json"]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert facts["items"] == 300 and facts["index"].startswith("IVF") and facts["index"].endswith(",SQ8")
    assert not facts["exact"] and facts["recall_at_10"] >= 0.9 and facts["queries"] == 300
    assert facts["index_bytes"] < facts["flat_bytes"]

    image = str(folder / "scene-042.png")
    assert main(["search", "--image", image, "--gallery", str(folder), "--cache", cache, "--model", MODEL, "-k", "3",
                 "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert Path(hits[0]["path"]).name == "scene-042.png" and hits[0]["score"] > 0.98

    store = Engine(EngineConfig(cache_dir=cache), encoder=shapes_model).store_for(folder)
    gallery = Gallery(folder, shapes_model, store=store)
    assert gallery.factory == facts["index"] and gallery.index.factory == facts["index"]  # recorded, then used
    assert gallery.db.one("SELECT COUNT(DISTINCT model) FROM vectors") == 1  # the search used the imported ones
    report = gallery.sync()
    assert report.encoded == report.captions_encoded == report.added == 0 and report.unchanged == 301


def test_compressed_choice_by_size():
    assert choose_factory(COMPRESS_ABOVE, 512) == "HNSW32,Flat"
    assert choose_factory(COMPRESS_ABOVE + 1, 512) == "IVF16384,SQ8"
    assert choose_factory(10**8, 512) == "IVF32768,SQ4" and 10**8 * 512 > CODES_MAX_BYTES  # SQ8 would not fit
    assert choose_factory(10**9, 512) == "IVF65536,PQ64"
    assert choose_factory(300, 128, compress_above=100) == "IVF4,SQ8"  # lists with >= 39 training vectors each


def test_compressed_index_tunes_nprobe_to_the_recall_target():
    """On embedding-like vectors (a mean direction, a fast-falling spectrum), the compressed index's nprobe is
    raised until recall@10 reaches 0.95 on its own rows; held-out queries from the same cloud see about the same,
    at a quarter of the memory of the vectors."""
    from test_index import embedding_like
    x, q = embedding_like(20_000, 64, seed=3), embedding_like(300, 64, seed=4)
    index = Index.build(x, factory=choose_factory(len(x), 64, compress_above=1000))
    assert index.compressed and 1 <= index.nprobe <= int(index.factory[3:].split(",")[0])
    assert recall_vs_exact(index, x, np.arange(len(x)), q) >= 0.9
    assert index.nbytes() < 0.4 * x.nbytes


def test_adding_a_file_changes_one_shard_not_all_after_it():
    entries = [Entry(f"img-{i:05d}.jpg", 1000 + i, i) for i in range(0, 4000, 2)]
    before = {c.name for c in plan(Path("/g"), entries, "k", shard_size=50)}
    after = {c.name for c in plan(Path("/g"), [*entries, Entry("img-01001.jpg", 7, 7)], "k", shard_size=50)}
    assert 25 <= len(before) <= 80 and len(before - after) == 1 and 1 <= len(after - before) <= 2


def test_sources_folder_list_and_table(folder, tmp_path):
    root, entries, missing = read_source(folder)
    assert root == folder and len(entries) == 301 and not missing  # the hidden file is skipped
    listed = tmp_path / "list.txt"
    listed.write_text(f"{folder / 'scene-001.png'}\n{folder / 'scene-002.png'}\n{folder / 'gone.png'}\n")
    root, entries, missing = read_source(listed)
    assert root == folder and [e.path for e in entries] == ["scene-001.png", "scene-002.png"]
    assert missing == ["gone.png"]
    table = tmp_path / "paths.csv"
    table.write_text("path,other\nscenes/scene-003.png,x\n")
    shutil.copytree(folder, tmp_path / "scenes", dirs_exist_ok=True)
    assert [e.path for e in read_source(table)[1]] == ["scene-003.png"]


def test_mbm_works_without_dask_and_embed_says_what_to_install(tmp_path):
    code = ("import sys; sys.modules['distributed'] = None; import mbm, mbm.shards, mbm._cli_scale; "
            "from mbm.__main__ import main; sys.exit(main(['embed', sys.argv[1], '--out', sys.argv[2]]))")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path), str(tmp_path / "out")], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and 'pip install "dask[distributed]" pyarrow' in done.stderr
