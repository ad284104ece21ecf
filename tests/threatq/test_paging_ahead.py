"""Pages asked ahead (``pages_in_flight``): the same items in the same order, fewer round trips, nothing lost
when the window shifts between a page and its continuation. Against the emulator."""

from __future__ import annotations

import math
import threading
from datetime import datetime, timezone
from typing import Any

import pytest

from exportkit.threatq.collections import find_collection
from exportkit.threatq.paging import iter_indicators

pytestmark = pytest.mark.integration


def _pull(client: Any, name: str = "All Indicators", **kwargs: Any) -> list[int]:
    return [int(i["id"]) for i in iter_indicators(client, find_collection(client, name).api_query, **kwargs)]


class Spy:
    """Wraps ``client.post``: which requests were asked ahead (tried once), and what each page held."""

    def __init__(self, client: Any, before_ahead: Any = None) -> None:
        self.original = client.post
        self.main: list[int] = []
        self.ahead: list[int] = []
        self.before_ahead = before_ahead
        self.lock = threading.Condition()
        client.post = self

    def wait_for_main(self, count: int) -> None:
        """Block until ``count`` requests of the pull itself were answered (a continuation waits for its page)."""
        with self.lock:
            self.lock.wait_for(lambda: len(self.main) >= count, timeout=10)

    def __call__(self, path: str, **kwargs: Any) -> Any:
        asked_ahead = kwargs.get("retry") is False
        if asked_ahead and self.before_ahead is not None:
            self.before_ahead(self)
        body = self.original(path, **kwargs)
        with self.lock:
            (self.ahead if asked_ahead else self.main).append(kwargs["params"]["offset"])
            self.lock.notify_all()
        return body


@pytest.mark.parametrize(("name", "page_size", "cap"), [("All Indicators", 37, None), ("CTR Export", 20, None), ("All Indicators", 100, 30)])
def test_the_same_items_in_the_same_order_as_one_page_at_a_time(tq, make_client, name, page_size, cap) -> None:
    if cap:
        tq.configure(page_cap=cap)
    one = _pull(make_client(), name, page_size=page_size, pages_in_flight=1)
    client = make_client()
    spy = Spy(client)
    three = _pull(client, name, page_size=page_size, pages_in_flight=3)
    assert three == one == tq.collection_ids(name)
    served = min(page_size, cap or page_size)
    assert spy.ahead, "continuations were asked for"
    # Round trips: a page and two continuations at a time (less what the overlap costs, plus the first page alone).
    assert len(spy.main) <= math.ceil(len(one) / (3 * (served - 2))) + 2, (spy.main, spy.ahead)


def test_shared_timestamps_and_a_bounded_window(tq, make_client) -> None:
    ids = tq.collection_ids("All Indicators")[:120]
    tq.touch(ids, at="2030-01-01 00:00:00")
    window = dict(since=datetime(2029, 1, 1, tzinfo=timezone.utc), until=datetime(2031, 1, 1, tzinfo=timezone.utc))
    assert _pull(make_client(), page_size=25, pages_in_flight=4, **window) == sorted(ids)
    everything = _pull(make_client(), page_size=25, pages_in_flight=4)
    assert sorted(everything) == sorted(tq.collection_ids("All Indicators")) and len(everything) == len(set(everything))


@pytest.mark.parametrize("which", ["first", "overlap"])
def test_a_continuation_that_no_longer_lines_up_is_dropped_and_nothing_is_lost(tq, make_client, which) -> None:
    """An item before the continuation leaves the window between the page and its continuation: every later
    item shifts left by one, and a continuation taken as it came would skip the item at its boundary."""
    before = tq.collection_ids("All Indicators")
    changed: list[int] = []
    page_size = 40

    def change_once(spy: Spy) -> None:
        if not changed:
            spy.wait_for_main(2)  # the page this continuation follows has been served: the change falls between
            # The second page of the pull is the first with continuations (the first page tells how many a
            # page holds). "first": an item early in it; "overlap": one of the two its continuation repeats.
            victim = before[page_size + 5] if which == "first" else before[2 * page_size - 3]
            changed.append(victim)
            tq.update_indicator(victim, description="changed between a page and its continuation")

    client = make_client()
    spy = Spy(client, before_ahead=change_once)
    got = _pull(client, page_size=page_size, pages_in_flight=3)
    assert changed and spy.ahead
    assert set(before) <= set(got), f"lost: {sorted(set(before) - set(got))}"
    assert got.count(changed[0]) in (1, 2)  # its new time is inside the open window: it may come again
    assert len(got) - got.count(changed[0]) == len(set(got)) - 1


def test_a_server_that_ignores_offset_is_not_taken_for_continuations(tq, make_client) -> None:
    client = make_client()
    original = client.post

    def no_offset(path: str, **kwargs: Any) -> Any:
        params = dict(kwargs["params"])
        if kwargs.get("retry") is False:
            params["offset"] = 0  # asked ahead, served the first page again
        return original(path, **{**kwargs, "params": params})

    client.post = no_offset  # type: ignore[method-assign]
    assert _pull(client, page_size=30, pages_in_flight=3) == tq.collection_ids("All Indicators")


def test_a_failing_continuation_is_asked_again_by_the_pull(tq, make_client) -> None:
    client = make_client()
    original = client.post
    failed: list[int] = []

    def flaky(path: str, **kwargs: Any) -> Any:
        if kwargs.get("retry") is False and len(failed) < 3:
            failed.append(kwargs["params"]["offset"])
            raise ConnectionError("a page asked ahead was cut")
        return original(path, **kwargs)

    client.post = flaky  # type: ignore[method-assign]
    assert _pull(client, page_size=30, pages_in_flight=3) == tq.collection_ids("All Indicators")
    assert len(failed) == 3
