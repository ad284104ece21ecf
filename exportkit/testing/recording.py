"""A sink that records every hook call and answers as it is told (for engine and wrapper tests)."""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import attrs

from exportkit.context import SinkContext, SinkType
from exportkit.errors import SinkError
from exportkit.hookspecs import hookimpl
from exportkit.records import Indicator
from exportkit.results import BatchResult, Withdrawal
from exportkit.settings import setting

__all__ = ['Call', 'RecordingSink', 'RecordingSettings', 'recording_sink_type']

# --- A sink that records its calls --------------------------------------------------


@attrs.frozen
class Call:
    """One hook call a :class:`RecordingSink` received.

    :param hook: ``open``, ``write``, ``withdraw``, ``close`` or ``check``.
    :param ids: source ids of the records or withdrawals (empty for open/close/check).
    :param error: the ``error`` argument of ``close``.
    :param dry_run: the context's dry-run flag.
    """

    hook: str
    ids: tuple[str, ...] = ()
    error: BaseException | None = None
    dry_run: bool = False


class RecordingSink:
    """A sink that records every hook call and answers as it is told.

    :param reject: ids to reject (reason ``"rejected by test"``).
    :param defer: ids to defer.
    :param skip: ids to skip.
    :param raise_on: raise on this call (1-based) of the hooks in ``raise_in``.
    :param raise_in: which hooks count for ``raise_on`` (default write and withdraw).
    :param exception: what to raise (default a :class:`~exportkit.errors.SinkError`).

    The id sets are ordinary attributes, so a test can change them between calls.
    Accepted writes are kept in :attr:`live` (source id -> record), accepted
    withdrawals remove them, so :attr:`live` is what the "target" holds.
    """

    def __init__(
        self,
        *,
        reject: Iterable[str] = (),
        defer: Iterable[str] = (),
        skip: Iterable[str] = (),
        raise_on: int | None = None,
        raise_in: Iterable[str] = ("write", "withdraw"),
        exception: BaseException | None = None,
    ) -> None:
        self.reject = set(reject)
        self.defer = set(defer)
        self.skip = set(skip)
        self.raise_on = raise_on
        self.raise_in = set(raise_in)
        self.exception = exception
        self.calls: list[Call] = []
        self.live: dict[str, Indicator] = {}
        self._counted = 0

    # convenience views
    def hooks(self) -> list[str]:
        """The hook names called so far, in order (``["open", "write", "close"]``)."""
        return [c.hook for c in self.calls]

    def written_ids(self) -> list[str]:
        """Every id handed to ``write``, in order, repeats included."""
        return [i for c in self.calls if c.hook == "write" for i in c.ids]

    def _record(self, call: Call) -> None:
        self.calls.append(call)
        if call.hook in self.raise_in:
            self._counted += 1
            if self.raise_on is not None and self._counted == self.raise_on:
                raise self.exception if self.exception is not None else SinkError(f"injected failure on {call.hook} call {self._counted}", sink="recording")

    def _answer(self, items: Sequence[Any]) -> BatchResult:
        result = BatchResult()
        for item in items:
            sid = item.source_id
            if sid in self.reject:
                result.reject(sid, "rejected by test")
            elif sid in self.defer:
                result.defer(sid, "deferred by test")
            elif sid in self.skip:
                result.skip(sid, "skipped by test")
            else:
                result.accept(sid, remote={"id": f"remote-{sid}"})
        return result

    @hookimpl
    def exportkit_open(self, context: SinkContext) -> None:
        self._record(Call("open", dry_run=context.dry_run))

    @hookimpl
    def exportkit_check(self, context: SinkContext) -> list[str]:
        self._record(Call("check", dry_run=context.dry_run))
        return ["recording sink: nothing to check"]

    @hookimpl
    def exportkit_write(self, records: Sequence[Indicator], context: SinkContext) -> BatchResult:
        self._record(Call("write", tuple(r.source_id for r in records), dry_run=context.dry_run))
        result = self._answer(records)
        if not context.dry_run:
            for record in records:
                outcome = result.get(record.source_id)
                if outcome is not None and outcome.status == "accepted":
                    self.live[record.source_id] = record
        return result

    @hookimpl
    def exportkit_withdraw(self, withdrawals: Sequence[Withdrawal], context: SinkContext) -> BatchResult:
        self._record(Call("withdraw", tuple(w.source_id for w in withdrawals), dry_run=context.dry_run))
        result = self._answer(withdrawals)
        if not context.dry_run:
            for w in withdrawals:
                outcome = result.get(w.source_id)
                if outcome is not None and outcome.status == "accepted":
                    self.live.pop(w.source_id, None)
        return result

    @hookimpl
    def exportkit_close(self, context: SinkContext, error: BaseException | None) -> None:
        self._record(Call("close", error=error, dry_run=context.dry_run))


@attrs.frozen
class RecordingSettings:
    """Settings of :func:`recording_sink_type` sinks (the ``[sinks.NAME]`` table)."""

    reject: list[str] = setting([], help="Source ids to reject.")
    defer: list[str] = setting([], help="Source ids to defer.")
    skip: list[str] = setting([], help="Source ids to skip.")
    raise_on: int | None = setting(None, help="Raise a SinkError on this write/withdraw call (1-based).", minimum=1)


class _RecordingFactory:
    """``factory(settings) -> RecordingSink`` that keeps every sink it made in :attr:`instances`."""

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs
        self.instances: list[RecordingSink] = []

    def __call__(self, settings: RecordingSettings) -> RecordingSink:
        kwargs = dict(self.kwargs)
        kwargs.setdefault("reject", settings.reject)
        kwargs.setdefault("defer", settings.defer)
        kwargs.setdefault("skip", settings.skip)
        kwargs.setdefault("raise_on", settings.raise_on)
        sink = RecordingSink(**kwargs)
        self.instances.append(sink)
        return sink

    @property
    def last(self) -> RecordingSink:
        """The sink made most recently."""
        return self.instances[-1]


def recording_sink_type(name: str = "recording", **kwargs: Any) -> SinkType:
    """A :class:`SinkType` that builds :class:`RecordingSink` objects.

    Keyword arguments go to every :class:`RecordingSink` (they win over the
    settings). ``sink_type.factory.instances`` lists the sinks it made and
    ``sink_type.factory.last`` is the newest.
    """
    return SinkType(name, RecordingSettings, _RecordingFactory(**kwargs), "Records every call (for tests).")
