"""One sink's part of a run: its context, its hook callers, its counters, its isolation.

:class:`SinkRun` wraps one sink object. Every hook call goes through it, so
the rules live in one place:

* a sink that raised :class:`~exportkit.errors.SinkError` (or anything
  unexpected) is *down* for the rest of the run, and every later record is
  deferred for it without a call;
* :class:`~exportkit.errors.TransientError` defers the records of that call
  and also takes the sink down, so a dead target costs one round of retries,
  not one per batch;
* outcomes are checked (a record not mentioned is accepted; outcomes for ids
  the sink was not given are logged and dropped; a missing reason is logged)
  and counted.
"""

from __future__ import annotations

import collections
import logging
import re
import traceback
from typing import Any, Sequence

import pluggy

from exportkit.context import SinkContext
from exportkit.errors import ExportkitError, SinkError, TransientError
from exportkit.plugins import sink_caller
from exportkit.records import Indicator
from exportkit.results import BatchResult, Outcome, Withdrawal
from exportkit.secrets import redact

__all__ = ["SinkRun", "SinkCounters"]

MAX_REASONS = 25


class SinkCounters:
    """Per-sink tallies for the run report."""

    def __init__(self) -> None:
        self.accepted = 0
        self.skipped = 0
        self.rejected = 0
        self.deferred = 0
        self.withdrawn = 0
        self.unchanged = 0
        self.reasons: collections.Counter[str] = collections.Counter()

    def count(self, outcome: Outcome, *, withdrawal: bool = False) -> None:
        if outcome.status == "accepted":
            if withdrawal:
                self.withdrawn += 1
            else:
                self.accepted += 1
        else:
            setattr(self, outcome.status, getattr(self, outcome.status) + 1)
            if outcome.reason and outcome.status != "deferred":
                self.reasons[_reason_key(outcome.reason)] += 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "withdrawn": self.withdrawn,
            "unchanged": self.unchanged,
            "skipped": self.skipped,
            "rejected": self.rejected,
            "deferred": self.deferred,
            "reasons": dict(self.reasons.most_common(MAX_REASONS)),
        }


_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")


def _reason_key(reason: str) -> str:
    """Group reasons that differ only in the value they quote ("'1.2.3.999' is not a valid IP address")."""
    return _QUOTED.sub("<value>", reason)[:160]


class SinkRun:
    """A sink in a run.

    :param name: the configured sink name.
    :param obj: the sink object.
    :param context: its context.
    :param pm: the instance plugin manager (the sink is registered as ``sink:<name>``).
    """

    def __init__(self, name: str, obj: object, context: SinkContext, pm: pluggy.PluginManager) -> None:
        self.name = name
        self.obj = obj
        self.context = context
        self.counters = SinkCounters()
        self.opened = False
        #: why the sink is down, or None while it works
        self.error: str | None = None
        self.error_exc: BaseException | None = None
        self._hooks = {h: sink_caller(pm, h, name) for h in ("exportkit_open", "exportkit_check", "exportkit_write", "exportkit_withdraw", "exportkit_verify", "exportkit_close")}
        self.log: logging.LoggerAdapter = context.logger

    @property
    def down(self) -> bool:
        return self.error is not None

    def _fail(self, exc: BaseException, during: str) -> None:
        message = redact(str(exc)) or type(exc).__name__
        if isinstance(exc, ExportkitError):
            self.error = f"{during}: {message}"
            self.log.error("%s failed: %s", during, message)
        else:  # a bug in the sink: keep the traceback in the log, not on the terminal
            self.error = f"{during}: {type(exc).__name__}: {message}"
            self.log.error("%s raised %s: %s\n%s", during, type(exc).__name__, message, redact(traceback.format_exc()))
        self.error_exc = exc

    def open(self) -> bool:
        """Call ``exportkit_open``; returns whether the sink is usable."""
        try:
            self._hooks["exportkit_open"](context=self.context)
        except Exception as exc:
            self._fail(exc, "open")
            return False
        self.opened = True
        return True

    def check(self) -> list[str]:
        """Call ``exportkit_check``; returns its lines (errors propagate to the caller)."""
        lines: list[str] = []
        for result in self._hooks["exportkit_check"](context=self.context):
            lines += list(result or ())
        return lines

    def write(self, records: Sequence[Indicator]) -> list[Outcome]:
        """Deliver live records; one outcome per record, in order."""
        return self._call("exportkit_write", records, records=records)

    def withdraw(self, withdrawals: Sequence[Withdrawal]) -> list[Outcome]:
        """Withdraw records; one outcome per withdrawal, in order."""
        return self._call("exportkit_withdraw", withdrawals, withdrawals=withdrawals)

    @property
    def verifies(self) -> bool:
        """True when the sink implements ``exportkit_verify``."""
        return bool(self._hooks["exportkit_verify"].get_hookimpls())

    def verify(self, source_ids: Sequence[str]) -> list[Outcome]:
        """Verify held records; one outcome per id, in order."""
        return self._call("exportkit_verify", source_ids, source_ids=source_ids)

    def _call(self, hook: str, items: Sequence[Indicator] | Sequence[Withdrawal] | Sequence[str], **kwargs: Any) -> list[Outcome]:
        if not items:
            return []
        if self.down:
            return [Outcome(_source_id(i), "deferred", f"sink down: {self.error}") for i in items]
        try:
            results = self._hooks[hook](context=self.context, **kwargs)
        except TransientError as exc:
            self._fail(exc, hook.removeprefix("exportkit_"))
            return [Outcome(_source_id(i), "deferred", redact(str(exc))) for i in items]
        except Exception as exc:  # SinkError or a bug: isolate, defer, go on with the other sinks
            self._fail(exc, hook.removeprefix("exportkit_"))
            return [Outcome(_source_id(i), "deferred", f"sink failed: {self.error}") for i in items]
        merged = BatchResult()
        for result in results:
            for outcome in result or ():
                merged.add(outcome)
        asked = {_source_id(i) for i in items}
        unknown = [o.source_id for o in merged if o.source_id not in asked]
        if unknown:  # a sink bug worth seeing; the outcomes are dropped
            self.log.warning("%s reported outcomes for records it was not given: %s", hook, ", ".join(unknown[:5]))
        outcomes = []
        for item in items:
            outcome = merged.get(_source_id(item)) or Outcome(_source_id(item), "accepted")
            if outcome.status != "accepted" and not outcome.reason:
                self.log.warning("%s gave no reason for %s record %s", hook, outcome.status, _source_id(item))
                outcome = Outcome(outcome.source_id, outcome.status, "no reason given by the sink", outcome.remote)
            if outcome.reason:
                outcome = Outcome(outcome.source_id, outcome.status, redact(outcome.reason), outcome.remote)
            outcomes.append(outcome)
        return outcomes

    def close(self, error: BaseException | None) -> None:
        """Call ``exportkit_close`` if the sink was opened; its exceptions are logged only."""
        if not self.opened:
            return
        try:
            self._hooks["exportkit_close"](context=self.context, error=error or self.error_exc)
        except Exception as exc:
            self.log.warning("close failed: %s: %s", type(exc).__name__, redact(str(exc)))

    def report(self) -> dict[str, Any]:
        data = self.counters.as_dict()
        data["error"] = self.error
        # "transient": the target was busy or unreachable and the work was deferred;
        # "fatal": credentials, configuration or a bug; someone must act.
        data["error_kind"] = None if self.error is None else ("transient" if isinstance(self.error_exc, TransientError) else "fatal")
        if self.context.notes:
            data["notes"] = dict(self.context.notes)
            if self.context.report_only:
                data["notes_report_only"] = sorted(self.context.report_only)
        return data


def _source_id(item: Indicator | Withdrawal | str) -> str:
    return item if isinstance(item, str) else item.source_id


def is_sink_error(exc: BaseException) -> bool:
    """True for errors a sink raises on purpose (as opposed to bugs)."""
    return isinstance(exc, (SinkError, TransientError))
