"""Pulling ahead: the source is read in a background thread into a bounded queue.

While the engine sends batch N to the sinks, the thread fetches the pages of
batch N+1. The queue holds at most two batches, so memory stays flat however
large the collection is, and a slow sink slows the pull instead of piling
records up. Sources use :func:`read_ahead` the same way one level down (the
ThreatQ source fetches the next pages while it normalises the current one).
"""

from __future__ import annotations

import queue
import threading
from datetime import datetime
from typing import Any, Callable, Iterable, Iterator, TypeVar

from exportkit.records import Indicator
from exportkit.sources import PullItem, Source

__all__ = ["pull_batches", "read_ahead"]

T = TypeVar("T")
_END = object()


def read_ahead(items: Iterable[T], size: int, depth: int, *, name: str = "exportkit-read-ahead") -> Iterator[list[T]]:
    """Yield lists of up to ``size`` items of ``items``, produced in a background thread at most ``depth`` lists ahead.

    The thread blocks when ``depth`` lists wait unread, so memory stays bounded
    and a slow consumer slows the producer. Leaving the loop early stops the
    thread after the list it is producing.

    :raises: whatever iterating ``items`` raised, in the consuming thread, after the lists before it.
    """
    q: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        chunk: list[T] = []
        try:
            for item in items:
                if stop.is_set():
                    return
                chunk.append(item)
                if len(chunk) >= size:
                    q.put(chunk)
                    chunk = []
            if chunk:
                q.put(chunk)
            q.put(_END)
        except BaseException as exc:  # hand the failure to the consuming thread
            q.put(exc)

    thread = threading.Thread(target=produce, name=name, daemon=True)
    thread.start()
    try:
        while True:
            got = q.get()
            if got is _END:
                return
            if isinstance(got, BaseException):
                raise got
            yield got
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                q.get_nowait()
            except queue.Empty:
                thread.join(timeout=0.1)


def pull_batches(
    source: Source,
    since: datetime | None,
    until: datetime | None,
    size: int,
    transform: Callable[[Indicator], PullItem | None] | None = None,
) -> Iterator[list[PullItem]]:
    """Yield lists of up to ``size`` items from ``source.pull(since, until)``, read ahead in a thread (two batches).

    :param transform: applied to each record in the pulling thread; ``None`` drops the record,
        a :class:`~exportkit.sources.BadRecord` takes its place (to be dead-lettered).
    :raises: whatever the source raised, in the consuming thread, after the batches before it.
    """

    def items() -> Iterator[PullItem]:
        for item in source.pull(since, until):
            if transform is not None and isinstance(item, Indicator):
                transformed = transform(item)
                if transformed is None:
                    continue
                item = transformed
            yield item

    return read_ahead(items(), size, 2, name="exportkit-pull")
