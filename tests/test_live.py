"""Live training: a short real run streams, a cancel is a hard stop, nothing lands on disk, and the result searches.

The runs are real (a child process training torch for a few seconds), so the assertions are on what a run
reports and leaves behind, never on how fast it is; quality within two minutes is `benchmarks/bench_live.py`'s job.
"""

import math
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from mbm.search import search
from mbm.train.live import HELDOUT_N, LIVE_MAX_SECONDS, SNAPSHOT_N, LiveTraining, embed_gallery, search_with

ROOT = Path(__file__).resolve().parents[1]


def _git_status() -> str:
    return subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True).stdout


@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
    """One 12 s run with HOME, TMPDIR and the XDG cache pointed at an empty folder, streamed to the end."""
    home = tmp_path_factory.mktemp("live-home")
    before = _git_status()
    with pytest.MonkeyPatch.context() as mp:
        for var in ("HOME", "TMPDIR", "XDG_CACHE_HOME"):
            mp.setenv(var, str(home))
        run = LiveTraining(seconds=12, seed=1)
        updates = list(run.updates())
        encoder = run.encoder()
    return run, updates, encoder, home, before


def test_a_short_run_streams_updates_and_ends_done(short_run):
    run, updates, _, _, _ = short_run
    steps = [u.step for u in updates if not u.done]
    assert steps and steps == sorted(set(steps)) and steps[0] == 1
    assert updates[-1].done and not any(u.done for u in updates[:-1])
    assert all(math.isfinite(u.loss) for u in updates)
    assert [u.seconds for u in updates] == sorted(u.seconds for u in updates)
    evaluated = [u for u in updates if u.recall is not None]
    assert evaluated[0].step == 1 and evaluated[-1] is updates[-1]  # scored at the start and always at the end
    for u in evaluated:
        assert u.snapshot.shape == (SNAPSHOT_N, SNAPSHOT_N) and np.all(np.abs(u.snapshot) <= 1 + 1e-4)
        assert len(set(u.snapshot_captions)) == SNAPSHOT_N
        assert set(u.recall) == {"t2i_r1", "t2i_r5", "i2t_r1", "i2t_r5"}
        assert all(0 <= v <= 1 for v in u.recall.values())
    assert run.final_recall == updates[-1].recall
    assert [h[0] for h in run.history] == steps[:len(run.history)] and len(run.history) == len(steps)
    losses = [loss for _, _, loss in run.history]
    if len(losses) >= 6:  # a loaded machine may leave time for only a few steps
        assert np.mean(losses[-3:]) < losses[0]
    assert not run._proc.is_alive()


def test_the_trained_encoder_embeds_texts_and_images_to_unit_rows(short_run):
    from mbm.data.shapes import make_scene, render
    from mbm.evaluate import retrieval
    _, updates, encoder, _, _ = short_run
    txt = encoder.encode_texts(["a red circle", "a blue square at the top left"])
    img = encoder.encode_images([render(make_scene("test", i), 128) for i in range(3)])
    for x, n in ((txt, 2), (img, 3)):
        assert x.shape == (n, encoder.embed_dim) and x.dtype == np.float32
        assert np.allclose(np.linalg.norm(x, axis=1), 1, atol=1e-5)
    assert encoder.name == "your mini-CLIP" and encoder.device.type == "cpu"
    # The parent's Encoder is the child's model: it scores the held-out sample exactly as the child reported.
    assert retrieval(encoder, "test", HELDOUT_N) == pytest.approx(updates[-1].recall, abs=0.011)


def test_nothing_is_written_to_disk(short_run):
    _, _, _, home, before = short_run
    assert list(home.rglob("*")) == []
    assert _git_status() == before


def test_search_with_another_model_reads_the_gallery_and_writes_nothing(short_run, engine):
    _, _, encoder, _, _ = short_run
    gallery = engine.gallery
    generation = gallery.generation()
    stamps = {p: p.stat().st_mtime_ns for p in gallery.store.rglob("*")
              if p.is_file() and not p.name.endswith("-shm")}  # SQLite's shared-memory file changes on reads
    ids, vectors = embed_gallery(encoder, gallery)
    assert len(ids) == len(gallery) and vectors.shape == (len(ids), encoder.embed_dim)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    hits = search_with(encoder, gallery, "a red circle", k=7, embedded=(ids, vectors))
    assert len(hits) == 7 and [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert all(h.thumbnail is not None and h.thumbnail.is_file() and h.path.is_file() for h in hits)
    assert gallery.generation() == generation
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps


def test_search_with_the_gallery_own_model_ranks_as_the_gallery_does(engine):
    gallery = engine.gallery
    mine = search_with(gallery.encoder, gallery, "a large green star", k=5)
    theirs = search(gallery, "a large green star", k=5)
    assert [h.id for h in mine] == [h.id for h in theirs]
    assert [h.score for h in mine] == pytest.approx([h.score for h in theirs], abs=1e-4)
    with pytest.raises(ValueError, match="#id"):
        search_with(gallery.encoder, gallery, "#3")


def test_cancel_stops_the_child_at_once():
    run = LiveTraining(seconds=60)
    seen = []
    for update in run.updates():  # the page's Stop button: another thread cancels while this one waits
        seen.append(update)
        if len(seen) == 1:
            threading.Thread(target=run.cancel).start()
    assert len(seen) < 20 and not any(u.done for u in seen)
    run._proc.join(5)
    assert not run._proc.is_alive()
    with pytest.raises(RuntimeError, match="cancelled"):
        run.encoder()
    run.cancel()  # idempotent
    assert list(run.updates()) == []


def test_leaving_the_updates_loop_stops_the_child():
    run = LiveTraining(seconds=60)
    updates = run.updates()
    next(updates)
    updates.close()  # a visitor closed the page: Gradio closes the generator
    assert not run._proc.is_alive()
    with pytest.raises(RuntimeError, match="cancelled"):
        run.encoder()


@pytest.mark.parametrize("seconds", [0, -5, LIVE_MAX_SECONDS + 1, float("nan")])
def test_seconds_out_of_range_are_refused(seconds):
    with pytest.raises(ValueError, match="seconds"):
        LiveTraining(seconds=seconds)


def test_an_unfinished_run_has_no_encoder():
    with LiveTraining(seconds=5) as run, pytest.raises(RuntimeError, match="not finished"):
        run.encoder()


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")
def test_a_child_that_dies_is_an_error_not_a_hang():
    run = LiveTraining(seconds=30)
    run.start()
    os.kill(run._proc.pid, signal.SIGKILL)  # as the out-of-memory killer would
    with pytest.raises(RuntimeError, match="ended unexpectedly"):
        list(run.updates())
    with pytest.raises(RuntimeError, match="failed"):
        run.encoder()
