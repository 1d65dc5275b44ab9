"""Garbage-collection pauses of the receiver process, measured and kept short.

A full (generation 2) collection walks every tracked object; in a receiver holding a model,
several sessions and their per-step statistics it can stop the event loop long enough for a
real-time step to miss its deadline. :func:`install` freezes what exists once the receiver is
ready (the model, modules, settings: they live as long as the process, so collecting them is
wasted work) and times every collection; pauses go to ``ndpca_gc_pause_seconds`` and a pause
over ``warn_ms`` is logged.
"""

from __future__ import annotations

import gc
import logging
import time
from typing import Any

log = logging.getLogger(__name__)


class GCWatch:
    def __init__(self, observe: Any = None, warn_ms: float = 50.0) -> None:
        self.observe = observe  # callable(seconds, generation) or None
        self.warn_ms = warn_ms
        self._t0 = 0.0
        self.longest_ms = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._t0 = time.perf_counter()
            return
        took = time.perf_counter() - self._t0
        self.longest_ms = max(self.longest_ms, took * 1e3)
        if self.observe is not None:
            self.observe(took, info.get("generation", -1))
        if took * 1e3 > self.warn_ms:
            log.warning("garbage collection of generation %s took %.0f ms (%s objects collected)",
                        info.get("generation"), took * 1e3, info.get("collected"))


def install(observe: Any = None, warn_ms: float = 50.0) -> GCWatch:
    """Freeze the objects that exist now and time every later collection."""
    gc.collect()
    gc.freeze()
    watch = GCWatch(observe, warn_ms)
    gc.callbacks.append(watch)
    return watch


def uninstall(watch: GCWatch) -> None:
    if watch in gc.callbacks:
        gc.callbacks.remove(watch)
    gc.unfreeze()
