"""What Explore's views share: a cache of fitted projections and built indexes, and the check of a whole number.

Fits and indexes are kept per (store, generation, model, what), so redrawing with another query costs one
projection or one search, not a refit; a gallery that changes gets a new generation and so new entries.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from mbm.errors import InputError

if TYPE_CHECKING:
    from mbm.gallery import Gallery


class Cache:
    """A small thread-safe LRU of fitted things. A missing entry is computed once, under its own lock, so a
    slow fit (UMAP) holds up only the callers waiting for that same entry."""

    def __init__(self, size: int = 16):
        self._items: OrderedDict = OrderedDict()
        self._pending: dict[tuple, threading.Lock] = {}
        self._size, self._lock = size, threading.Lock()

    def get(self, key: tuple, make: Callable[[], object]):
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            pending = self._pending.setdefault(key, threading.Lock())
        with pending:  # whoever comes first computes; the others wait here and then find it
            with self._lock:
                if key in self._items:
                    return self._items[key]
            try:
                value = make()
            except BaseException:
                with self._lock:
                    self._pending.pop(key, None)
                raise
            with self._lock:
                self._items[key] = value
                self._pending.pop(key, None)
                while len(self._items) > self._size:
                    self._items.popitem(last=False)
            return value


CACHE = Cache(size=8)


def cached(gallery: Gallery, what: str, make: Callable[[], object]):
    """`make()` for this gallery as it is now (store, generation, model), computed once while it stays so."""
    return CACHE.get((str(gallery.store), gallery.generation(), gallery.encoder.key, what), make)


def whole(value, lo: int, hi: int, message: str) -> int:
    """`value` as an int in lo..hi (a slider's 4.0 is 4), else ValueError(message)."""
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not lo <= value <= hi:
        raise InputError(message)
    return int(value)
