"""The breaker: consecutive failed batches open it; a good batch resets the count."""

from __future__ import annotations

import logging

import pytest

from exportkit.errors import TransientError
from exportkit_ctia.breaker import Breaker

LOG = logging.getLogger("test.breaker")


def batch(breaker: Breaker, *, fails: bool) -> bool:
    breaker.begin()
    if fails:
        breaker.failed(TransientError("CTIA HTTP 503 after 5 tries"))
    return breaker.end(LOG)


def test_opens_after_the_configured_failures_in_a_row_and_refuses_every_later_batch():
    breaker = Breaker(3)
    assert [batch(breaker, fails=True) for _ in range(3)] == [False, False, True]
    with pytest.raises(TransientError, match=r"3 batches in a row \(last: CTIA HTTP 503"):
        breaker.begin()
    with pytest.raises(TransientError):
        breaker.raise_if_open()


def test_a_good_batch_between_failures_starts_the_count_again():
    breaker = Breaker(2)
    for fails in (True, False, True, False, True):
        assert batch(breaker, fails=fails) is False
    assert breaker.stopped is None and breaker.failed_batches == 1
