"""What a sink reports back for each batch: one outcome per record.

Outcomes, and what the engine does with each:

``accepted``
    The target now holds the record (or, for a withdrawal, no longer shows it
    as live). The engine remembers the record's content hash and the
    ``remote`` ids the sink gives, and never sends the same content again.
``skipped``
    Nothing to do, by design (a type the target cannot hold, a record it
    already had). Counts as confirmed; the reason goes into the report.
``rejected``
    The target refused this record and retrying will not help. The record is
    dead-lettered with the reason and counts as confirmed; ``exportkit dlq``
    shows and replays it.
``deferred``
    Not delivered yet for a passing reason (rate limit, outage). The
    checkpoint stays before the record, so the next run offers it again.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Iterator, Literal

import attrs

if TYPE_CHECKING:
    from exportkit.records import Indicator

__all__ = ["Outcome", "BatchResult", "Withdrawal", "OUTCOME_STATUSES", "CONFIRMED"]

OutcomeStatus = Literal["accepted", "skipped", "rejected", "deferred"]
OUTCOME_STATUSES: tuple[str, ...] = ("accepted", "skipped", "rejected", "deferred")
#: statuses that let the checkpoint move past a record
CONFIRMED = frozenset({"accepted", "skipped", "rejected"})


@attrs.frozen
class Outcome:
    """What happened to one record in one sink.

    :param source_id: the record's :attr:`~exportkit.records.Indicator.source_id`.
    :param status: one of ``accepted``, ``skipped``, ``rejected``, ``deferred``.
    :param reason: why, for every status but ``accepted``; shown in reports and dead letters.
    :param remote: for ``accepted``: what the sink needs to find the record in
        its target later (remote ids); stored and handed back through
        :meth:`exportkit.context.SinkContext.held`. JSON-serialisable.
    """

    source_id: str
    status: OutcomeStatus = attrs.field(validator=attrs.validators.in_(OUTCOME_STATUSES))
    reason: str | None = None
    remote: Mapping[str, Any] | None = None


@attrs.frozen
class Withdrawal:
    """A record that must stop being live in the target.

    :param source_id: the record's id in the source.
    :param reason: ``expired`` (status Expired or ``expires_at`` passed) or
        ``removed`` (no longer in the collection, found by a reconcile pass).
    :param record: the record as last seen, when the source still has it
        (``None`` for ``removed``).
    """

    source_id: str
    reason: Literal["expired", "removed"]
    record: Indicator | None = None


class BatchResult:
    """Collects a sink's outcomes for one batch.

    Records the sink does not mention count as ``accepted`` with no remote ids,
    so the smallest sink can return ``None`` or an empty result. Reporting the
    same record twice keeps the last outcome.

    Example::

        result = BatchResult()
        for record in records:
            if record.type not in SUPPORTED:
                result.skip(record, f"type {record.type} is not supported")
            else:
                result.accept(record, remote={"id": send(record)})
        return result
    """

    def __init__(self, outcomes: Iterable[Outcome] = ()) -> None:
        self._outcomes: dict[str, Outcome] = {}
        for outcome in outcomes:
            self.add(outcome)

    def add(self, outcome: Outcome) -> None:
        """Record one outcome (replacing an earlier one for the same record)."""
        self._outcomes[outcome.source_id] = outcome

    def accept(self, record: Indicator | Withdrawal | str, remote: Mapping[str, Any] | None = None) -> None:
        """The target holds the record now; ``remote`` is remembered for later runs."""
        self.add(Outcome(_id(record), "accepted", None, dict(remote) if remote is not None else None))

    def skip(self, record: Indicator | Withdrawal | str, reason: str) -> None:
        """Nothing was sent, by design; ``reason`` says why."""
        self.add(Outcome(_id(record), "skipped", reason))

    def reject(self, record: Indicator | Withdrawal | str, reason: str) -> None:
        """The target refused the record for good; it is dead-lettered with ``reason``."""
        self.add(Outcome(_id(record), "rejected", reason))

    def defer(self, record: Indicator | Withdrawal | str, reason: str) -> None:
        """Try again next run; the checkpoint will not move past this record."""
        self.add(Outcome(_id(record), "deferred", reason))

    def get(self, source_id: str) -> Outcome | None:
        """The outcome reported for ``source_id``, if any."""
        return self._outcomes.get(source_id)

    def __iter__(self) -> Iterator[Outcome]:
        return iter(self._outcomes.values())

    def __len__(self) -> int:
        return len(self._outcomes)

    def __repr__(self) -> str:
        counts: dict[str, int] = {}
        for outcome in self._outcomes.values():
            counts[outcome.status] = counts.get(outcome.status, 0) + 1
        return f"BatchResult({counts})"


def _id(record: Any) -> str:
    if isinstance(record, str):
        return record
    return str(record.source_id)
