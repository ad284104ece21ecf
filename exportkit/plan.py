"""The plan of a dry run: what each sink would do with each record, one JSON line each.

``exportkit run --dry-run --plan FILE`` (``-`` for standard output) writes a
line per record per sink::

    {"sink": "ctia", "source_id": "1042", "value": "203.0.113.7", "type": "ip",
     "action": "create", "reason": null}

``action`` is one of :data:`ACTIONS`:

* ``create``: the sink holds nothing for the record and would accept it;
* ``update``: it holds an older version and would accept the new one;
* ``unchanged``: it holds this very version, so nothing is sent;
* ``expire``: the record expired or left the collection, and the sink would
  withdraw what it holds;
* ``skip``: the sink would leave it out by design (``reason`` says why, with
  the value, unlike the run report's counts, which group reasons);
* ``reject``: the sink would refuse it (a real run dead-letters it);
* ``defer``: the sink could not decide now (a real run retries next time).

Sinks run on their own threads, so :meth:`PlanWriter.add` is thread-safe;
lines of different sinks may interleave, each line is whole.
"""

from __future__ import annotations

import json
import threading
from typing import IO, Any

from exportkit.records import Indicator

__all__ = ["PlanWriter", "ACTIONS", "action_for"]

ACTIONS = ("create", "update", "unchanged", "expire", "skip", "reject", "defer")

_BY_STATUS = {"skipped": "skip", "rejected": "reject", "deferred": "defer"}


def action_for(status: str, *, held: bool, withdrawal: bool = False) -> str:
    """The plan action for a sink outcome ``status`` (accepted, skipped, rejected, deferred)."""
    if status == "accepted":
        return "expire" if withdrawal else ("update" if held else "create")
    return _BY_STATUS.get(status, status)


class PlanWriter:
    """Writes plan lines to an open text stream (the caller opens and closes it)."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.lines = 0
        self._lock = threading.Lock()

    def add(self, sink: str, source_id: str, record: Indicator | None, action: str, reason: str | None = None) -> None:
        """One line: what ``sink`` would do with ``source_id`` (``record`` is None for a record gone from the collection)."""
        entry: dict[str, Any] = {
            "sink": sink,
            "source_id": source_id,
            "value": record.value if record is not None else None,
            "type": record.type if record is not None else None,
            "action": action,
            "reason": reason,
        }
        line = json.dumps(entry, ensure_ascii=False) + "\n"
        with self._lock:
            self.stream.write(line)
            self.lines += 1
