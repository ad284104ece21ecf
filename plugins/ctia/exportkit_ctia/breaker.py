"""Stop trying for the run after repeated failures, instead of backing off for every batch.

Each batch (a write, a withdrawal or a verification) either reached CTIA or
failed transiently (unreachable, 5xx after the retries, rate-limited beyond
the cap). After ``max_failed_batches`` failed batches in a row the breaker
opens: every later call of the run raises
:class:`~exportkit.errors.TransientError` at once, which the engine turns
into "defer this batch and every later one" (exit 3, checkpoint held).
"""

from __future__ import annotations

import logging
from typing import Any

from exportkit.errors import TransientError

__all__ = ["Breaker"]


class Breaker:
    """Counts consecutive failed batches for one run.

    :param max_failed: how many failed batches in a row open the breaker.
    """

    def __init__(self, max_failed: int) -> None:
        self.max_failed = max_failed
        #: consecutive failed batches so far
        self.failed_batches = 0
        #: why the sink stopped trying for this run, or None while it still tries
        self.stopped: str | None = None
        self._failed_now = False
        self._last_error = ""

    def begin(self) -> None:
        """Start a batch.

        :raises TransientError: the breaker is open.
        """
        self._failed_now = False
        self.raise_if_open()

    def raise_if_open(self) -> None:
        if self.stopped is not None:
            raise TransientError(self.stopped)

    def failed(self, error: BaseException | str = "") -> None:
        """CTIA failed transiently in the current batch (``error`` says how, for the report)."""
        self._failed_now = True
        self._last_error = str(error) or self._last_error

    def end(self, logger: logging.Logger | logging.LoggerAdapter[Any]) -> bool:
        """Finish a batch; returns True when this batch opened the breaker."""
        if not self._failed_now:
            self.failed_batches = 0
            return False
        self.failed_batches += 1
        if self.stopped is None and self.failed_batches >= self.max_failed:
            last = f" (last: {self._last_error[:300]})" if self._last_error else ""
            self.stopped = f"CTIA failed {self.failed_batches} batches in a row{last}; not trying again in this run"
            logger.error("%s: everything left is deferred to the next run", self.stopped)
            return True
        return False
