"""A run's share of the organisation's CTIA rate limit.

Cisco allows an organisation about 8,000 API requests per rolling hour,
shared by all its API clients; beyond that every request gets 429 with a
``Retry-After`` close to an hour. A run must neither spend the whole limit
(other clients of the organisation need it too) nor wait an hour for it.
So the client counts every CTIA request it sends, retries included, against
a per-run budget (the ``request_budget`` setting), and once the budget is
spent, or CTIA said to wait longer than the run would, every further request
raises :class:`BudgetSpent` without touching the network. That is a
:class:`~exportkit_ctia.client.Deferred`: the delivery defers the records
concerned (the checkpoint stays before them) and queues the expiries, and the
next runs go on from there.
"""

from __future__ import annotations

import threading

from exportkit.errors import TransientError

__all__ = ["RequestBudget", "BudgetSpent"]


class BudgetSpent(TransientError):
    """This run may send no more CTIA requests; the work waits for the next run."""


class RequestBudget:
    """Counts the requests of one run against ``limit``.

    :param limit: requests the run may send (at least 1).
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.spent = 0
        #: why the run sends nothing more (``None`` while it may)
        self.stopped: str | None = None
        self._lock = threading.Lock()

    @property
    def remaining(self) -> int:
        return 0 if self.stopped else max(0, self.limit - self.spent)

    def spend(self) -> None:
        """Count one request about to be sent.

        :raises BudgetSpent: the budget is spent, or CTIA asked the run to stop.
        """
        with self._lock:
            if self.stopped is None and self.spent >= self.limit:
                self.stopped = f"this run's CTIA request budget ({self.limit} requests, request_budget) is spent"
            if self.stopped is not None:
                raise BudgetSpent(f"{self.stopped}; the rest waits for the next run")
            self.spent += 1

    def stop(self, why: str) -> None:
        """Send nothing more in this run (CTIA rate-limits us for longer than the run waits)."""
        with self._lock:
            if self.stopped is None:
                self.stopped = why

    def summary(self) -> dict[str, object]:
        """For the run report: requests sent, the budget, and why sending stopped, if it did."""
        out: dict[str, object] = {"sent": self.spent, "budget": self.limit}
        if self.stopped:
            out["stopped"] = self.stopped
        return out
