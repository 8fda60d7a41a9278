"""The child process of a live training run: train, score on the held-out sample, stream it all to the parent.

It writes nothing to disk. Events go to the parent as JSON over a pipe, from a helper thread so that a slow reader
never stalls a step; the weights go last, as safetensors bytes. It exits when the parent dies, and skips the
interpreter's shutdown once everything is sent. `mbm.train.live.LiveTraining` is the parent's side.
"""

from __future__ import annotations

import json
import math
import os
import sys
import threading
import time
from dataclasses import replace

import numpy as np

from mbm.train.live import heldout_sample, live_config, snapshot_indices

FINISH_SECONDS = 1.0  # kept back from the budget for the last evaluation and sending the weights


class _HeldOut:
    """The held-out sample as tensors, ready to score the model being trained (in eval mode, then back)."""

    def __init__(self, model_cfg: dict):
        import open_clip
        import torch
        from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

        from mbm.train.clip import _pixels
        scenes, self.texts = heldout_sample()
        mean = torch.tensor(OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(OPENAI_DATASET_STD).view(1, 3, 1, 1)
        self.pixels = _pixels(scenes, model_cfg["vision_cfg"]["image_size"], mean, std)  # (N, 3, H, W)
        context = model_cfg["text_cfg"]["context_length"]
        self.tokens = open_clip.SimpleTokenizer(context_length=context)(self.texts)  # (N, context)
        self.snap = snapshot_indices(self.texts)

    def __call__(self, model) -> dict:
        import torch

        from mbm.evaluate import pair_recall
        was_training = model.training
        model.eval()
        with torch.inference_mode():
            img = model.encode_image(self.pixels, normalize=True).numpy()  # (N, D)
            txt = model.encode_text(self.tokens, normalize=True).numpy()  # (N, D)
        model.train(was_training)
        snap = img[self.snap] @ txt[self.snap].T  # (n, n): images x captions
        return {"recall": pair_recall(img, txt, self.texts),
                "snapshot": np.round(snap, 4).tolist(), "snapshot_captions": [self.texts[i] for i in self.snap]}


class _Sender:
    """Events go out on a helper thread, so a parent that reads slowly never stalls a training step."""

    def __init__(self, conn):
        import queue
        self.conn, self.q = conn, queue.Queue()
        self.thread = threading.Thread(target=self._run, daemon=True, name="mbm-live-sender")
        self.thread.start()

    def send(self, event: dict, blob: bytes | None = None) -> None:
        self.q.put((event, blob))

    def close(self) -> None:
        self.q.put(None)
        self.thread.join()
        self.conn.close()

    def _run(self) -> None:
        while (item := self.q.get()) is not None:
            event, blob = item
            try:
                self.conn.send_bytes(json.dumps({**event, "attached": blob is not None}).encode())
                if blob is not None:
                    self.conn.send_bytes(blob)
            except OSError:  # the parent is gone
                os._exit(0)


def _watch_parent(parent: int) -> None:
    """Exit when the parent dies (we are re-parented): nobody is left to read, or to kill us."""
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(0)


def main(conn, parent: int, t0: float, seconds: float, seed: int, threads: int, eval_every: float,
         nice: int) -> None:
    """The child's entry point: `conn` is the write end of the pipe to the parent (process `parent`), `t0` its
    `time.monotonic()` when the run was requested; the rest are `LiveTraining`'s settings."""
    import tempfile
    import traceback

    if nice and hasattr(os, "nice"):
        os.nice(nice)
    # Importing open_clip imports torch._dynamo, which makes an empty cache folder in the temp dir; naming the temp
    # dir itself, which exists, keeps the promise that the child writes nothing (nothing here compiles).
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", tempfile.gettempdir())
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True, name="mbm-live-watch").start()
    out, code = _Sender(conn), 0
    try:
        _train_and_send(out, t0, seconds, seed, threads, eval_every)
    except BaseException:  # noqa: BLE001 - whatever it is, the parent should read it rather than a bare exit code
        out.send({"error": traceback.format_exc()})
        code = 1
    finally:
        out.close()
    # Everything is sent and there is nothing on disk to flush: skip the interpreter's shutdown, where the batch
    # thread, caught inside a torch op, can abort the process ("terminate called without an active exception").
    sys.stderr.flush()
    os._exit(code)


def _train_and_send(out: _Sender, t0: float, seconds: float, seed: int, threads: int, eval_every: float) -> None:
    import torch
    from safetensors.torch import save

    from mbm.train.clip import build_model, train
    torch.set_num_threads(threads)
    cfg = live_config(seconds, seed)
    heldout = _HeldOut(cfg.model_cfg)
    deadline = t0 + seconds - FINISH_SECONDS
    now = lambda: time.monotonic() - t0
    state = {"model": None, "evaluated": -math.inf, "step": 0, "loss": math.nan}

    def on_step(step: int, progress: float, loss: float) -> None:
        state.update(step=step, loss=loss)
        event = {"step": step, "seconds": round(now(), 3), "loss": loss}
        if step == 1 or now() - state["evaluated"] >= eval_every:
            event.update(heldout(state["model"]))
            state["evaluated"] = now()
        out.send(event)

    budget = deadline - time.monotonic()  # what start-up left; the learning-rate schedule spreads over it
    if budget > 0:
        model, _ = train(replace(cfg, minutes=budget / 60), on_step, should_stop=lambda: time.monotonic() >= deadline,
                         on_start=lambda m: state.update(model=m))
    else:
        model = build_model(cfg)[0].eval()
    final = heldout(model)
    weights = save({k: v.detach().contiguous() for k, v in model.state_dict().items()})
    out.send({"step": state["step"], "seconds": round(now(), 3), "loss": state["loss"], "done": True,
              "model_cfg": cfg.model_cfg, **final}, weights)
