"""The read-ahead puller: batches in order, bounded, errors handed over, transform applied."""

from __future__ import annotations

import threading
import time

import pytest

from exportkit.pull import pull_batches
from exportkit.sources import BadRecord
from exportkit.testing import make_indicators


class ListSource:
    def __init__(self, items, fail_after=None):
        self.items = items
        self.fail_after = fail_after
        self.total = len(items)
        self.yielded = 0

    def pull(self, since, until):
        for i, item in enumerate(self.items):
            if self.fail_after is not None and i == self.fail_after:
                raise RuntimeError("source broke")
            self.yielded += 1
            yield item


def test_batches_keep_order_and_size():
    items = make_indicators(25) + [BadRecord(None, "bad")]
    batches = list(pull_batches(ListSource(items), None, None, 10))
    assert [len(b) for b in batches] == [10, 10, 6]
    assert [x for b in batches for x in b] == items


def test_error_arrives_after_the_batches_before_it():
    got = []
    with pytest.raises(RuntimeError, match="source broke"):
        for batch in pull_batches(ListSource(make_indicators(30), fail_after=25), None, None, 10):
            got.append(len(batch))
    assert got == [10, 10]


def test_read_ahead_is_bounded():
    source = ListSource(make_indicators(1000))
    it = pull_batches(source, None, None, 10)
    next(it)
    time.sleep(0.2)
    # one batch consumed, at most two queued and one being built
    assert source.yielded <= 10 * 4 + 1
    it.close()


def test_transform_drops_and_replaces():
    records = make_indicators(6)
    transform = lambda r: None if int(r.source_id) % 2 else r  # noqa: E731
    batches = list(pull_batches(ListSource(records), None, None, 10, transform))
    assert [r.source_id for r in batches[0]] == ["2", "4", "6"]


def test_abandoning_the_iterator_stops_the_thread():
    before = threading.active_count()
    it = pull_batches(ListSource(make_indicators(10_000)), None, None, 10)
    next(it)
    it.close()
    deadline = time.monotonic() + 5  # close() stops the thread; wait for it, no fixed pause
    while threading.active_count() > before and time.monotonic() < deadline:
        time.sleep(0.005)
    assert threading.active_count() <= before
