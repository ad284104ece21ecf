"""The run hooks (run started, transform, run finished), called through pluggy and contained.

Every call goes through the instance's plugin manager, so hook wrappers,
``tryfirst``/``trylast`` and ``EXPORTKIT_TRACE_HOOKS`` tracing behave as
pluggy documents. What a plugin raises never leaves this module:

* ``exportkit_run_started`` / ``exportkit_run_finished``: one pluggy call
  each (an exception ends that call, as in pluggy); the error is logged and
  kept in :attr:`RunHooks.errors` with the plugin's name, for the report.
* ``exportkit_transform_record``: the implementations are chained (each gets
  the record the previous one returned), in pluggy's call order, one pluggy
  call per implementation with every hook wrapper around it. A plugin that
  raises, or returns a record with another ``source_id`` or something that is
  not a record, turns that record into a :class:`~exportkit.sources.BadRecord`
  naming the plugin and the error; it is dead-lettered and the run goes on.
"""

from __future__ import annotations

import logging
import threading
import traceback
from types import TracebackType
from typing import Any

import pluggy

from exportkit.context import RunInfo
from exportkit.records import Indicator
from exportkit.secrets import redact
from exportkit.sources import BadRecord

__all__ = ["RunHooks"]


class RunHooks:
    """The run hooks of one run.

    :param pm: the instance plugin manager.
    :param run: the run, passed to every hook.
    :param log: the run's logger.
    """

    def __init__(self, pm: pluggy.PluginManager, run: RunInfo, log: logging.Logger | logging.LoggerAdapter[Any]) -> None:
        self.pm = pm
        self.run = run
        self.log = log
        #: one ``{"hook", "plugin", "error"}`` entry per contained plugin failure, for the report
        self.errors: list[dict[str, str]] = []
        #: records a transform dropped on purpose (returned False)
        self.filtered = 0
        self._lock = threading.Lock()
        name = "exportkit_transform_record"
        plain = [i for i in pm.hook.exportkit_transform_record.get_hookimpls() if not (i.hookwrapper or i.wrapper)]
        # pluggy calls the last implementation of get_hookimpls() first; chain in that order.
        self._steps = [
            (impl.plugin_name, pm.subset_hook_caller(name, remove_plugins=[o.plugin for o in plain if o is not impl]))
            for impl in reversed(plain)
        ]

    @property
    def transforms(self) -> bool:
        """True when some plugin implements ``exportkit_transform_record``."""
        return bool(self._steps)

    def started(self) -> None:
        """Call ``exportkit_run_started``."""
        self._notify("exportkit_run_started", run=self.run)

    def finished(self, report: dict[str, Any]) -> None:
        """Call ``exportkit_run_finished`` with the report as written."""
        self._notify("exportkit_run_finished", run=self.run, report=report)

    def _notify(self, hook: str, **kwargs: Any) -> None:
        caller = getattr(self.pm.hook, hook)
        try:
            caller(**kwargs)
        except Exception as exc:
            self._record(hook, _culprit(exc.__traceback__, caller.get_hookimpls()), exc)

    def _record(self, hook: str, plugin: str, exc: BaseException) -> str:
        error = f"{type(exc).__name__}: {redact(str(exc))}".rstrip(": ")
        with self._lock:
            self.errors.append({"hook": hook, "plugin": plugin, "error": error})
        # The traceback goes to the log (redacted like every line), never to the terminal.
        self.log.error("plugin %s failed in %s: %s\n%s", plugin, hook, error, redact("".join(traceback.format_exception(exc))))
        return error

    def transform(self, record: Indicator) -> Indicator | BadRecord | None:
        """Run the transform chain on one record: the record to send, ``None`` to drop it, or a dead letter."""
        original = record
        for plugin, caller in self._steps:
            try:
                results = caller(record=record, run=self.run)
            except Exception as exc:
                error = self._record("exportkit_transform_record", plugin, exc)
                return BadRecord(original.source_id, f"transform by plugin {plugin} failed: {error}", original.to_dict())
            result = results[0] if results else None  # pluggy leaves None results out
            if result is False:
                with self._lock:
                    self.filtered += 1
                return None
            if isinstance(result, Indicator):
                if result.source_id != original.source_id:
                    reason = f"transform by plugin {plugin} changed source_id to {result.source_id!r}"
                    return BadRecord(original.source_id, reason, original.to_dict())
                record = result
            elif result is not None and result is not True:
                reason = f"transform by plugin {plugin} returned {type(result).__name__}, not a record, True, False or None"
                return BadRecord(original.source_id, reason, original.to_dict())
        return record


def _culprit(tb: TracebackType | None, impls: list[pluggy.HookImpl]) -> str:
    """The plugin whose implementation is deepest in the traceback (``unknown plugin`` if none is)."""
    codes = {getattr(impl.function, "__code__", None): impl.plugin_name for impl in impls}
    found = "unknown plugin"
    while tb is not None:
        found = codes.get(tb.tb_frame.f_code, found)
        tb = tb.tb_next
    return found
