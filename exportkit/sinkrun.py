"""One sink's part of a run: its own thread, its context, its hook callers, its counters, its isolation.

:class:`SinkRun` wraps one sink object. Every hook call goes through it, so
the rules live in one place:

* every hook of the sink object (``open``, ``check``, ``write``,
  ``withdraw``, ``verify``, ``close``) runs on one dedicated thread, the same for the
  whole run (:class:`SinkThread`), so a sink may hold thread-bound resources
  (a ``sqlite3`` connection, a thread-local session); different sinks run
  concurrently, each on its own thread;
* hooks are called through the instance's plugin manager
  (:class:`SinkHooks`), so wrappers, ``tryfirst``/``trylast`` and tracing
  work as pluggy documents;
* any exception from a hook is caught here: the sink is *down* for the rest
  of the run, and every later record is deferred for it without a call;
  :class:`~exportkit.errors.TransientError` defers the records of that call
  the same way, so a dead target costs one round of retries, not one per batch;
* outcomes are resolved by :func:`exportkit.outcomes.resolve_outcomes` (the
  rule the testing kit uses too) and counted; contract breaches are logged;
* a failing ``close`` is an error of the sink in the report (exit 3): the
  sink may have lost what it had not made durable.

The testing kit's :class:`~exportkit.testing.SinkHarness` uses
:class:`SinkThread`, :class:`SinkHooks` and the outcome rule too, so a sink
that passes the kit runs the same way in a run.
"""

from __future__ import annotations

import collections
import logging
import re
import threading
import traceback
from concurrent.futures import Future, ThreadPoolExecutor
from collections.abc import Iterable, Sequence
from typing import Any, Callable, TypeVar

import pluggy

from exportkit.context import SinkContext
from exportkit.errors import ExportkitError, SinkError, TransientError
from exportkit.outcomes import resolve_outcomes, source_id_of
from exportkit.plugins import sink_caller
from exportkit.records import Indicator
from exportkit.results import Outcome, Withdrawal
from exportkit.secrets import redact

__all__ = ["SinkRun", "SinkCounters", "SinkThread", "SinkHooks", "SINK_HOOKS", "on_each"]

MAX_REASONS = 25
#: the data-path hooks, each called on one sink at a time
SINK_HOOKS = ("exportkit_open", "exportkit_check", "exportkit_write", "exportkit_withdraw", "exportkit_verify", "exportkit_close")

T = TypeVar("T")


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


class SinkThread:
    """The one thread that runs every hook of one sink object.

    Started on first use, stopped by :meth:`stop` (after ``close``). A call
    made from this thread itself runs at once, so code already on the sink's
    thread may call :meth:`call` again without waiting for itself.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._executor: ThreadPoolExecutor | None = None
        self._ident: int | None = None
        self._guard = threading.Lock()

    @property
    def ident(self) -> int | None:
        """The thread's identifier once it has run something, else ``None``."""
        return self._ident

    def submit(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> Future[T]:
        """Run ``fn(*args, **kwargs)`` on the sink's thread; returns its future."""
        with self._guard:
            if self._executor is None:
                # One worker: it lives until stop(), so every call lands on the same thread.
                self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"exportkit-sink-{self.name}")
            return self._executor.submit(self._run, fn, args, kwargs)

    def _run(self, fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]) -> T:
        self._ident = threading.get_ident()
        return fn(*args, **kwargs)

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn`` on the sink's thread and wait for it; its exception is raised here."""
        if self._ident is not None and threading.get_ident() == self._ident:
            return fn(*args, **kwargs)
        return self.submit(fn, *args, **kwargs).result()

    def stop(self) -> None:
        """Let the thread finish what it was given and end; a later call starts a new one.

        Waits for the thread, unless called on the thread itself (then it ends
        when the current call returns).
        """
        on_own_thread = self._ident is not None and threading.get_ident() == self._ident
        with self._guard:
            executor, self._executor = self._executor, None
            self._ident = None
        if executor is not None:
            executor.shutdown(wait=not on_own_thread)


class SinkHooks:
    """One sink object's data-path hooks, called through the plugin manager on the sink's thread.

    :param name: the configured sink name (registered as ``sink:<name>``).
    :param pm: the plugin manager holding the sink object.
    :param thread: the sink's thread (a new one by default).
    """

    def __init__(self, name: str, pm: pluggy.PluginManager, thread: SinkThread | None = None) -> None:
        self.name = name
        self.thread = thread or SinkThread(name)
        self._callers = {hook: sink_caller(pm, hook, name) for hook in SINK_HOOKS}

    def implements(self, hook: str) -> bool:
        """True when the sink object (or a wrapper) implements ``hook``."""
        return bool(self._callers[hook].get_hookimpls())

    def __call__(self, hook: str, **kwargs: Any) -> list[Any]:
        """Call ``hook`` with ``kwargs`` on the sink's thread; pluggy's list of results, or its exception."""
        caller = self._callers[hook]
        return self.thread.call(lambda: list(caller(**kwargs) or ()))


def on_each(sinks: Iterable[SinkRun], fn: Callable[[SinkRun], T]) -> list[T]:
    """Run ``fn(sink)`` for every sink at the same time, each on its own sink's thread; results in order."""
    futures = [sink.thread.submit(fn, sink) for sink in sinks]
    return [future.result() for future in futures]


class SinkRun:
    """A sink in a run.

    :param name: the configured sink name.
    :param obj: the sink object, or ``None`` when it could not be created
        (then :attr:`error` says why and no hook is ever called).
    :param context: its context.
    :param pm: the instance plugin manager (the sink is registered as ``sink:<name>``).
    """

    def __init__(self, name: str, obj: object | None, context: SinkContext, pm: pluggy.PluginManager) -> None:
        self.name = name
        self.obj = obj
        self.context = context
        self.counters = SinkCounters()
        self.opened = False
        #: why the sink is down, or None while it works
        self.error: str | None = None
        self.error_exc: BaseException | None = None
        #: why ``close`` failed, or None
        self.close_error: str | None = None
        self.hooks = SinkHooks(name, pm)
        self.thread = self.hooks.thread
        self.log: logging.LoggerAdapter[Any] = context.logger

    @property
    def down(self) -> bool:
        return self.error is not None

    def _describe(self, exc: BaseException, during: str) -> str:
        message = redact(str(exc)) or type(exc).__name__
        if isinstance(exc, ExportkitError):
            self.log.error("%s failed: %s", during, message)
            return f"{during}: {message}"
        # A bug in the sink: keep the traceback in the log, not on the terminal.
        self.log.error("%s raised %s: %s\n%s", during, type(exc).__name__, message, redact("".join(traceback.format_exception(exc))))
        return f"{during}: {type(exc).__name__}: {message}"

    def _fail(self, exc: BaseException, during: str) -> None:
        self.error = self._describe(exc, during)
        self.error_exc = exc

    def open(self) -> bool:
        """Call ``exportkit_open``; returns whether the sink is usable."""
        if self.down:
            return False
        try:
            self.hooks("exportkit_open", context=self.context)
        except BaseException as exc:  # on the sink's thread: nothing to interrupt but the sink
            self._fail(exc, "open")
            return False
        self.opened = True
        return True

    def check(self) -> list[str]:
        """Call ``exportkit_check``; returns its lines (errors propagate to the caller)."""
        lines: list[str] = []
        for result in self.hooks("exportkit_check", context=self.context):
            lines += [str(line) for line in result or ()]
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
        return self.hooks.implements("exportkit_verify")

    def verify(self, source_ids: Sequence[str]) -> list[Outcome]:
        """Verify held records; one outcome per id, in order."""
        return self._call("exportkit_verify", source_ids, source_ids=source_ids)

    def _call(self, hook: str, items: Sequence[Indicator] | Sequence[Withdrawal] | Sequence[str], **kwargs: Any) -> list[Outcome]:
        if not items:
            return []
        if self.down:
            return [Outcome(source_id_of(i), "deferred", f"sink down: {self.error}") for i in items]
        try:
            results = self.hooks(hook, context=self.context, **kwargs)
        except TransientError as exc:
            self._fail(exc, hook.removeprefix("exportkit_"))
            return [Outcome(source_id_of(i), "deferred", redact(str(exc))) for i in items]
        except BaseException as exc:  # SinkError or a bug: isolate, defer, go on with the other sinks
            self._fail(exc, hook.removeprefix("exportkit_"))
            return [Outcome(source_id_of(i), "deferred", f"sink failed: {self.error}") for i in items]
        resolved = resolve_outcomes(hook, items, results)
        for problem in resolved.problems:  # sink bugs worth seeing; the rule already decided
            self.log.warning("%s", problem)
        return resolved.outcomes

    def close(self, error: BaseException | None) -> None:
        """Call ``exportkit_close`` if the sink was opened, then stop its thread.

        A failing close is reported as this sink's error (exit 3): "accepted"
        means durable when the write hook returned, so a sink that still had
        work to do in close may have lost it.
        """
        try:
            if self.opened:
                self.opened = False
                try:
                    self.hooks("exportkit_close", context=self.context, error=error or self.error_exc)
                except BaseException as exc:
                    self.close_error = self._describe(exc, "close")
        finally:
            self.thread.stop()

    def report(self) -> dict[str, Any]:
        data = self.counters.as_dict()
        errors = [e for e in (self.error, self.close_error) if e]
        data["error"] = "; ".join(errors) or None
        # "transient": the target was busy or unreachable and the work was deferred;
        # "fatal": credentials, configuration or a bug; someone must act;
        # "close": the sink worked but failed to close (what it still held may be lost).
        if self.error is not None:
            data["error_kind"] = "transient" if isinstance(self.error_exc, TransientError) else "fatal"
        else:
            data["error_kind"] = "close" if self.close_error else None
        if self.context.notes:
            data["notes"] = dict(self.context.notes)
            if self.context.report_only:
                data["notes_report_only"] = sorted(self.context.report_only)
        return data


def is_sink_error(exc: BaseException) -> bool:
    """True for errors a sink raises on purpose (as opposed to bugs)."""
    return isinstance(exc, (SinkError, TransientError))
