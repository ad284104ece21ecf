"""The organisation-wide rate limit of Cisco's private intel API, as the emulator models it.

Cisco documents about 8,000 requests per rolling 60 minutes per
organisation, shared by every API client of that organisation; beyond it
the API answers 429 with a ``Retry-After`` of the seconds until the oldest
counted request leaves the window (close to an hour when the budget was
spent at once). Refused requests are not counted.
"""

from __future__ import annotations

import collections
import math
import threading
from typing import Callable

__all__ = ["OrgRateLimit"]


class OrgRateLimit:
    """At most ``limit`` requests in any ``window`` seconds.

    :param limit: requests allowed per window (Cisco: about 8000).
    :param window: the rolling window in seconds (Cisco: 3600).
    :param clock: seconds (any epoch); the emulator passes its own clock.
    """

    def __init__(self, limit: int, window: float, clock: Callable[[], float]) -> None:
        if limit < 1 or window <= 0:
            raise ValueError("the rate limit needs limit >= 1 and window > 0")
        self.limit = limit
        self.window = window
        self.clock = clock
        self._seen: collections.deque[float] = collections.deque()
        self._lock = threading.Lock()

    def take(self) -> int | None:
        """Count one request; or, over the limit, return the ``Retry-After`` seconds (nothing counted)."""
        with self._lock:
            now = self.clock()
            while self._seen and self._seen[0] <= now - self.window:
                self._seen.popleft()
            if len(self._seen) >= self.limit:
                return max(1, math.ceil(self._seen[0] + self.window - now))
            self._seen.append(now)
            return None

    def used(self) -> int:
        """Requests counted in the current window."""
        with self._lock:
            now = self.clock()
            return sum(1 for t in self._seen if t > now - self.window)
