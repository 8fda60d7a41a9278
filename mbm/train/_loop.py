"""What every training loop here shares: the loop itself (`run_steps`), batches made on a helper thread, and the
learning-rate schedule."""

from __future__ import annotations

import math
import queue
import threading
import time
from collections.abc import Callable

StepHook = Callable[[int, float, float], None]  # (step, progress 0-1, loss)


def run_steps(opt, batches: queue.Queue, loss_at: Callable, *, steps: int, minutes: float,
              lr_at: Callable[[float], float], on_step: StepHook | None = None,
              should_stop: Callable[[], bool] | None = None, after_step: Callable[[], None] | None = None) -> list:
    """The training loop of every model here: `steps` > 0 steps exactly (a replayable run), else as many as
    `minutes` allow, the learning rate set from the run's progress before each one.

    Args:
        loss_at: `(batch, progress) -> loss tensor` for one batch from `batches`.
        after_step: run after each optimiser step (e.g. clamping a parameter).
        on_step: called after each step with (step, progress 0-1, loss); should_stop: polled before each.
    Returns:
        The history, `(step, seconds, loss)` per step.
    """
    budget, start, history, step = minutes * 60, time.perf_counter(), [], 0
    while True:
        progress = step / steps if steps > 0 else (time.perf_counter() - start) / budget
        if progress >= 1 or (should_stop and should_stop()):
            return history
        for group in opt.param_groups:
            group["lr"] = lr_at(progress)
        loss = loss_at(batches.get(), progress)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if after_step:
            after_step()
        step += 1
        history.append((step, round(time.perf_counter() - start, 2), round(loss.item(), 4)))
        if on_step:
            on_step(step, progress, loss.item())


def background_batches(make: Callable[[], object], stop: threading.Event, name: str) -> queue.Queue:
    """Call `make()` over and over on a daemon thread, keeping up to 4 batches ready, until `stop` is set:
    rendering scenes with PIL then overlaps the model's step instead of delaying it."""
    q: queue.Queue = queue.Queue(maxsize=4)

    def work():
        while not stop.is_set():
            item = make()
            while not stop.is_set():
                try:
                    q.put(item, timeout=0.2)
                    break
                except queue.Full:
                    continue
    threading.Thread(target=work, daemon=True, name=name).start()
    return q


def cosine_lr(progress: float, lr: float, warmup: float) -> float:
    """Linear warm-up over `warmup` of the run, then cosine decay to zero; `progress` runs from 0 to 1."""
    if progress < warmup:
        return lr * progress / warmup
    return 0.5 * lr * (1 + math.cos(math.pi * min(1.0, (progress - warmup) / (1 - warmup))))
