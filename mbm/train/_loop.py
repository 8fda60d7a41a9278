"""What every training loop here shares: batches made on a helper thread, and the learning-rate schedule."""

from __future__ import annotations

import math
import queue
import threading
from collections.abc import Callable


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
