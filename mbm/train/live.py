"""Live training for the page: a fresh mini-CLIP learns the shapes world for up to two minutes while a visitor watches.

Training runs in a child process (multiprocessing "spawn"; `mbm.train._live_child` is its side), not a thread: it
leaves the parent's GIL and event loop free for other visitors, uses `threads` CPU threads (by default all but one
core) at a lower priority, and cancel is a hard stop (SIGKILL). The child writes nothing to disk: it streams events
back through a pipe as JSON, and at the end the weights as safetensors bytes plus the model config, from which the
parent builds an ordinary `Encoder`. It exits by itself if the parent dies. Every few seconds it scores the model on
a held-out sample (`HELDOUT_N` scenes of the `test` split, never trained on, ranked against their canonical captions
as `mbm.evaluate.retrieval` does) and sends a small similarity matrix of the first `SNAPSHOT_N` of them, which turns
diagonal as the model learns.

`embed_gallery` and `search_with` search a gallery with such an encoder in memory, leaving the gallery's store alone.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import threading
import time
import types
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from mbm.data.images import ImageError, load_image
from mbm.data.shapes import Scene
from mbm.errors import InputError
from mbm.evaluate import caption_pairs
from mbm.models import Encoder
from mbm.search import Hit, Query, query_vector
from mbm.train.clip import TrainConfig, default_model_cfg

if TYPE_CHECKING:
    from mbm.gallery import Gallery

log = logging.getLogger(__name__)
LIVE_MAX_SECONDS = 120
LIVE_MODEL_NAME = "your mini-CLIP"
HELDOUT_N = 200  # scenes `test/0..199`: the same sample as `mbm.evaluate.retrieval(encoder, "test", HELDOUT_N)`
SNAPSHOT_N = 8  # pairs in the similarity-matrix snapshot


def live_model_cfg() -> dict:
    """The shipped architecture at 32 px with a text tower half as wide: about twice the steps per second on one core
    (0.3 s for 128 pairs). Halving the text width saves more than halving the image: the text tower, with its
    49,408-token embedding to update, dominates a step."""
    cfg = default_model_cfg(image_size=32)
    cfg["text_cfg"]["width"] = 64
    return cfg


def live_config(seconds: float, seed: int = 0) -> TrainConfig:
    """The settings of a live run of `seconds`.

    No groups of minimal variants (`group_fraction=0`): they teach shape over thousands of steps, but in a few
    hundred they slow down what two minutes can learn (colour, place, count): held-out text->image R@5 after 50
    steps was about 65% without them and 45-50% with them, R@1 after 350 steps 90% against 73%. The grid probe
    stays: without it R@1 after 350 steps was 80%. Shape is not learned in two minutes either way (zero-shot
    shape stays near chance); that is what the shipped model's 36 minutes buy.
    """
    return TrainConfig(minutes=seconds / 60, batch_size=128, lr=1e-3, group_fraction=0.0, seed=seed,
                       model_cfg=live_model_cfg())


def heldout_sample(n: int = HELDOUT_N) -> tuple[list[Scene], list[str]]:
    """The held-out scenes (`test` split, never trained on) and their canonical captions."""
    return caption_pairs("test", n)


def snapshot_indices(texts: list[str], n: int = SNAPSHOT_N) -> list[int]:
    """The first `n` positions whose captions are all different, so the snapshot has one right answer per row."""
    first = {}
    for i, text in enumerate(texts):
        first.setdefault(text, i)
    return sorted(first.values())[:n]


@dataclass
class LiveUpdate:
    """One event of a live run."""
    step: int
    seconds: float  # since `start()`, the child's start-up included
    loss: float  # the training loss of this step (NaN if no step ran)
    snapshot: np.ndarray | None = None  # (n, n) cosine: held-out images (rows) x their captions (cols), when evaluated
    snapshot_captions: list[str] | None = None
    recall: dict[str, float] | None = None  # t2i_r1, t2i_r5, i2t_r1, i2t_r5 on the held-out sample, when evaluated
    done: bool = False


class LiveTraining:
    """One live run in a child process; iterate `updates()`, then take `encoder()`.

    Args:
        seconds: the whole run, from `start()` to the last update, child start-up included; at most `LIVE_MAX_SECONDS`.
        seed: seeds the initial weights and the stream of training scenes.
        threads: torch CPU threads in the child (default: all cores but one, which stays for other visitors).
        eval_every: seconds between evaluations on the held-out sample (0.1 s each on one core); also after the
            first step and at the end.
        nice: how much the child lowers its CPU priority, so searches of the serving process come first (0: none).

    Use as a context manager, or call `cancel()`: a dropped run never leaves its child behind.

    The serving process should leave the child its cores: with torch's default of one thread per core, its own
    parallel regions wait for the core the child holds, and searches during training took p95 110 ms instead of
    10 ms (`torch.set_num_threads(cores - threads)` at start-up; see `benchmarks/bench_live.py`).
    """

    def __init__(self, seconds: float, seed: int = 0, threads: int | None = None, eval_every: float = 4.0,
                 nice: int = 10):
        if not 0 < seconds <= LIVE_MAX_SECONDS:
            raise InputError(f"seconds must be more than 0 and at most {LIVE_MAX_SECONDS}, got {seconds!r}")
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be at least 1, got {threads!r}")
        if not eval_every > 0:
            raise ValueError(f"eval_every must be a positive number of seconds, got {eval_every!r}")
        self.seconds, self.seed, self.eval_every, self.nice = float(seconds), seed, float(eval_every), nice
        self.threads = threads or max(1, _cpu_count() - 1)
        self.history: list[tuple[int, float, float]] = []  # (step, seconds, loss), as streamed
        self.final_recall: dict[str, float] | None = None
        self._lock = threading.RLock()
        self._proc = self._reader = None
        self._cancelled = self._done = False
        self._error: str | None = None  # why the child failed, if it did
        self._weights: bytes | None = None
        self._model_cfg: dict | None = None
        self._encoder: Encoder | None = None

    def __repr__(self) -> str:
        state = "done" if self._done else "cancelled" if self._cancelled else "running" if self._proc else "not started"
        return f"LiveTraining({self.seconds:g} s, seed={self.seed}, threads={self.threads}, {state})"

    def __enter__(self) -> LiveTraining:
        return self

    def __exit__(self, *_) -> None:
        self.cancel()

    def __del__(self):
        with contextlib.suppress(Exception):  # at interpreter exit half the world may be gone
            self.cancel()

    @property
    def running(self) -> bool:
        """Started, and neither finished nor cancelled."""
        return self._proc is not None and not (self._done or self._cancelled)

    def start(self) -> None:
        """Start the child (once); `seconds` count from here."""
        import multiprocessing

        from mbm.train import _live_child
        with self._lock:
            if self._proc is not None or self._cancelled:
                return
            ctx = multiprocessing.get_context("spawn")
            reader, writer = ctx.Pipe(duplex=False)
            t0 = time.monotonic()  # CLOCK_MONOTONIC is system-wide: the child measures from the same origin
            args = (writer, os.getpid(), t0, self.seconds, self.seed, self.threads, self.eval_every, self.nice)
            self._proc = ctx.Process(target=_live_child.main, args=args, name="mbm-live-training", daemon=True)
            _start_without_main(self._proc)
            writer.close()  # the child holds the only write end now: its death reads as EOF here
            self._reader = reader

    def updates(self) -> Iterator[LiveUpdate]:
        """Start if needed and yield events as they arrive; the last one has `done=True`.

        Ends early, without a done event, when `cancel()` is called. Leaving the loop early (a closed page) cancels.

        Raises:
            RuntimeError: the child failed or died.
        """
        self.start()
        try:
            while not (self._done or self._cancelled):
                event, blob = self._receive()
                if event is None:
                    return
                yield self._accept(event, blob)
        finally:
            if not self._done:
                self.cancel()
            self._reap()
            if self._reader is not None:
                self._reader.close()  # here, not in cancel(): another thread may be polling it until now

    def cancel(self) -> None:
        """Stop the child now (SIGKILL) and drop what it learned; a finished run keeps its model. Idempotent."""
        with self._lock:
            if not self._done:
                self._cancelled = True
        self._reap(wait=0.0)

    def encoder(self) -> Encoder:
        """The trained model as an `Encoder` (CPU, fp32), built once, in memory.

        Raises:
            RuntimeError: the run was cancelled, failed, or has not finished (iterate `updates()` to its end first).
        """
        if self._encoder is None:
            if self._weights is None:
                raise RuntimeError(f"the live training failed ({self._error}), so there is no model" if self._error
                                   else "the live training was cancelled, so there is no model" if self._cancelled
                                   else "the live training has not finished: iterate updates() to its done event")
            self._encoder = _build_encoder(self._weights, self._model_cfg)
        return self._encoder

    # ---------------------------------------------------------------- plumbing
    def _receive(self) -> tuple[dict | None, bytes | None]:
        """The next event and its attached bytes; `(None, None)` once cancelled."""
        while not self._cancelled:
            try:
                if not self._reader.poll(0.2):
                    continue
                event = json.loads(self._reader.recv_bytes())
                blob = self._reader.recv_bytes() if event.get("attached") else None
            except (EOFError, OSError):  # the child is gone: killed by cancel(), or it died
                if self._cancelled:
                    break
                self._reap(wait=5.0)
                self._error = f"its process ended unexpectedly, exit code {self._proc.exitcode}"
                raise RuntimeError(f"the live training {self._error}") from None
            if "error" in event:
                self._error = event["error"].strip().splitlines()[-1]  # the exception's line of the traceback
                raise RuntimeError(f"the live training failed in its process:\n{event['error']}")
            return event, blob
        return None, None

    def _accept(self, event: dict, blob: bytes | None) -> LiveUpdate:
        update = LiveUpdate(step=event["step"], seconds=event["seconds"], loss=event["loss"],
                            recall=event.get("recall"), snapshot_captions=event.get("snapshot_captions"),
                            done=bool(event.get("done")))
        if event.get("snapshot") is not None:
            update.snapshot = np.asarray(event["snapshot"], np.float32)
        if update.step and (not self.history or self.history[-1][0] != update.step):
            self.history.append((update.step, update.seconds, update.loss))
        if update.done:
            self._weights, self._model_cfg, self.final_recall = blob, event["model_cfg"], update.recall
            self._done = True
        return update

    def _reap(self, wait: float = 5.0) -> None:
        """Join the child, killing it if it is still there after `wait` seconds (one thread at a time)."""
        with self._lock:
            if self._proc is None:
                return
            self._proc.join(wait)
            if self._proc.is_alive():
                self._proc.kill()
                self._proc.join(5.0)


def _cpu_count() -> int:
    """Cores this process may run on (the affinity mask, not the host's count, where the OS tells)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 2


_START_LOCK = threading.Lock()


def _start_without_main(proc) -> None:
    """`proc.start()` with the parent's main script hidden: spawn would first re-run it in the child (under
    `python app.py` that imports Gradio: start-up took 7.3 s instead of 4.3 s on 2 cores, out of the visitor's
    budget), and the child needs nothing from it.
    `__main__` is swapped only while the child is launched, under a lock."""
    with _START_LOCK:
        main = sys.modules["__main__"]
        sys.modules["__main__"] = types.ModuleType("__main__")  # no __file__, no __spec__: nothing to re-run
        try:
            proc.start()
        finally:
            sys.modules["__main__"] = main


def _build_encoder(weights: bytes, model_cfg: dict) -> Encoder:
    """open_clip's own model, transform and tokenizer around the trained weights, normalised as `clip.save` records."""
    import open_clip
    import torch
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
    from safetensors.torch import load
    model = open_clip.CLIP(**model_cfg)
    model.load_state_dict(load(weights))
    preprocess = open_clip.image_transform(model_cfg["vision_cfg"]["image_size"], is_train=False,
                                           mean=OPENAI_DATASET_MEAN, std=OPENAI_DATASET_STD,
                                           resize_mode="squash", interpolation="bicubic")
    tokenizer = open_clip.SimpleTokenizer(context_length=model_cfg["text_cfg"]["context_length"])
    return Encoder(model, preprocess, tokenizer, name=LIVE_MODEL_NAME, device=torch.device("cpu"), precision="fp32")


# -------------------------------------------------------------------- searching a gallery with another model
def embed_gallery(encoder: Encoder, gallery: Gallery, batch_size: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """`(ids (N,), vectors (N, D))` of the gallery's searchable images embedded by `encoder`, in memory.

    Images are read from the original files; the gallery's store is not written. Files that became unreadable
    since the gallery's last sync are left out.
    """
    ids, _ = gallery.image_matrix()
    items = gallery.items(ids)

    def prepare(item):
        try:
            return item.id, encoder.prepare(load_image(gallery.file(item), draft=encoder.image_size))
        except (ImageError, OSError) as e:
            log.warning("left out of the search with %s: %s", encoder.name, e)
            return item.id, None

    import torch
    out_ids, parts = [], []
    with ThreadPoolExecutor(min(4, _cpu_count()), thread_name_prefix="mbm-live-decode") as pool:
        for start in range(0, len(items), batch_size):
            done = [(i, x) for i, x in pool.map(prepare, items[start:start + batch_size]) if x is not None]
            if done:
                out_ids += [i for i, _ in done]
                parts.append(encoder.encode_pixels(torch.stack([x for _, x in done])))  # (B, D)
    vectors = np.concatenate(parts) if parts else np.empty((0, encoder.embed_dim), np.float32)
    return np.array(out_ids, np.int64), vectors


def search_with(encoder: Encoder, gallery: Gallery, text: str | Query, k: int = 10,
                embedded: tuple[np.ndarray, np.ndarray] | None = None) -> list[Hit]:
    """The gallery images closest to a query, ranked by `encoder` instead of the gallery's own model.

    Args:
        encoder: the model to rank with (e.g. `LiveTraining.encoder()`).
        gallery: where the images, captions and thumbnails come from; nothing is written to it.
        text: a query string (`mbm.search` syntax; `#item` terms are not supported here), or a parsed `Query`.
        k: at most this many results.
        embedded: `embed_gallery(encoder, gallery)`, when the caller keeps it between queries.
    Returns:
        `Hit`s best first, with the gallery's thumbnails.
    """
    if k < 1:
        raise InputError(f"k must be at least 1, got {k}")
    terms = list(Query.parse(text).terms)
    if any(t.kind == "item" for t in terms):
        raise InputError("search by gallery item (#id) is not available with this model; use words or an image")
    ids, vectors = embedded if embedded is not None else embed_gallery(encoder, gallery)
    if vectors.shape[1] != encoder.embed_dim:
        raise ValueError(f"embedded vectors have {vectors.shape[1]} dimensions, {encoder.name} makes "
                         f"{encoder.embed_dim}: they were made by another model")
    scores = vectors @ query_vector(encoder, terms)  # (N,)
    top = np.argsort(-scores, kind="stable")[:k]
    items = {it.id: it for it in gallery.items(ids[top])}
    return [Hit(int(i), gallery.file(items[i]), items[i].caption, float(s), gallery.thumbnail(items[i]),
                items[i].path) for i, s in zip(ids[top].tolist(), scores[top].tolist()) if i in items]
