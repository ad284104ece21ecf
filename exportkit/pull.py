"""Pulling ahead: the source is read in a background thread into a bounded queue.

While the engine sends batch N to the sinks, the thread fetches the pages of
batch N+1. The queue holds at most two batches, so memory stays flat however
large the collection is, and a slow sink slows the pull instead of piling
records up.
"""

from __future__ import annotations

import queue
import threading
from datetime import datetime
from typing import Any, Callable, Iterator

from exportkit.records import Indicator
from exportkit.sources import PullItem, Source

__all__ = ["pull_batches"]

_END = object()


def pull_batches(
    source: Source,
    since: datetime | None,
    until: datetime | None,
    size: int,
    transform: Callable[[Indicator], PullItem | None] | None = None,
) -> Iterator[list[PullItem]]:
    """Yield lists of up to ``size`` items from ``source.pull(since, until)``, read ahead in a thread.

    :param transform: applied to each record in the pulling thread; ``None`` drops the record,
        a :class:`~exportkit.sources.BadRecord` takes its place (to be dead-lettered).
    :raises: whatever the source raised, in the consuming thread, after the batches before it.
    """
    q: queue.Queue[Any] = queue.Queue(maxsize=2)
    stop = threading.Event()

    def produce() -> None:
        batch: list[PullItem] = []
        try:
            for item in source.pull(since, until):
                if stop.is_set():
                    return
                if transform is not None and isinstance(item, Indicator):
                    transformed = transform(item)
                    if transformed is None:
                        continue
                    item = transformed
                batch.append(item)
                if len(batch) >= size:
                    q.put(batch)
                    batch = []
            if batch:
                q.put(batch)
            q.put(_END)
        except BaseException as exc:  # hand the failure to the consuming thread
            q.put(exc)

    thread = threading.Thread(target=produce, name="exportkit-pull", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                q.get_nowait()
            except queue.Empty:
                thread.join(timeout=0.1)
