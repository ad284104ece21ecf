"""Python's cycle collector, tuned while a run moves records.

A run allocates a few dozen containers per record (decoded JSON, the record,
its judgement body, outcomes) and frees them almost all by reference
counting: they hold no cycles. The cycle collector still walks them every
700 allocations, and every tenth walk takes in the older generations, which
hold the modules, plugins and state of the process. Profiled at 30,000
indicators, that was 16% of a run's CPU for nothing collected.

:func:`fewer_collections` moves what start-up allocated out of the
collector's reach (:func:`gc.freeze`) and lets the youngest generation grow
to :data:`YOUNG_THRESHOLD` objects before a walk, for as long as any run in
the process is inside it. Cycles are still collected, later; memory stays
bounded by the batch and page sizes as before.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["YOUNG_THRESHOLD", "fewer_collections"]

#: objects allocated (less freed) before the youngest generation is walked; Python's default is 700
YOUNG_THRESHOLD = 50_000

_lock = threading.Lock()
_active = 0
_before: tuple[int, int, int] = gc.get_threshold()


@contextmanager
def fewer_collections() -> Iterator[None]:
    """Collect cycles less often inside; the process's own thresholds come back when the last run leaves."""
    global _active, _before
    with _lock:
        if _active == 0:
            _before = gc.get_threshold()
            gc.freeze()
            gc.set_threshold(max(YOUNG_THRESHOLD, _before[0]), _before[1], _before[2])
        _active += 1
    try:
        yield
    finally:
        with _lock:
            _active -= 1
            if _active == 0:
                gc.set_threshold(*_before)
                gc.unfreeze()
