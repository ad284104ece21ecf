"""The run report: JSON in the log folder, a short human summary, and the exit code.

Exit codes (what cron sees)::

    0  everything pulled was delivered (or skipped by design)
    1  fatal: config, credentials, TLS or host name of the source, no sink usable, a bug
    2  usage: bad command-line options (click)
    3  partial: a sink deferred records, new records were dead-lettered, a sink
       failed to close, a plugin failed in a run hook, a reconcile found held
       records not live and could not repair them, a reconcile was refused (it
       could not read every id of the collection), or the source did not answer
       (timeouts, refused, 5xx/429 after retries)
    4  the instance is already running

The JSON carries ``report_version`` (:data:`REPORT_VERSION`): it grows by one
whenever a key changes meaning or goes away; new keys may appear without it.
"""

from __future__ import annotations

import json
import os
import re
from datetime import datetime
from pathlib import Path
from typing import Any

import attrs

from exportkit.escape import visible
from exportkit.files import link_atomic, private_folder, write_atomic
from exportkit.records import format_time

__all__ = [
    "RunReport", "exit_code_for", "prune_reports", "DEFAULT_KEEP_REPORTS", "REPORT_VERSION",
    "EXIT_OK", "EXIT_FATAL", "EXIT_USAGE", "EXIT_PARTIAL", "EXIT_LOCKED",
]

EXIT_OK, EXIT_FATAL, EXIT_USAGE, EXIT_PARTIAL, EXIT_LOCKED = 0, 1, 2, 3, 4
#: the version of the report's JSON shape (see the module docstring)
REPORT_VERSION = 1
#: per-run reports kept by default ([export] keep_reports)
DEFAULT_KEEP_REPORTS = 50


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return format_time(value)
    if attrs.has(type(value)):
        return {k: _jsonable(v) for k, v in attrs.asdict(value, recurse=False).items()}
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


@attrs.define
class RunReport:
    """Everything a run did, per sink. Written as ``<instance>.report.json``."""

    instance: str
    run_id: str
    mode: str
    dry_run: bool
    started: datetime
    finished: datetime | None = None
    window: dict[str, Any] = attrs.field(factory=dict)
    checkpoint_before: Any = None
    checkpoint_after: Any = None
    source_total: int | None = None
    pulled: int = 0
    bad: int = 0
    filtered: int = 0
    dead_lettered: int = 0
    #: dead letters this run added (a record already in the queue is not counted again)
    dead_lettered_new: int = 0
    sinks: dict[str, dict[str, Any]] = attrs.field(factory=dict)
    reconcile: dict[str, Any] = attrs.field(factory=lambda: {"ran": False})
    #: plugins that failed in a run hook or a transform: ``{"hook", "plugin", "error"}`` each
    plugin_errors: list[dict[str, str]] = attrs.field(factory=list)
    error: str | None = None
    exit_code: int = 0
    path: Path | None = None

    @property
    def deferred(self) -> int:
        return sum(s.get("deferred", 0) for s in self.sinks.values())

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"report_version": REPORT_VERSION}
        data.update({k: _jsonable(v) for k, v in attrs.asdict(self, recurse=False).items() if k != "path"})
        if self.finished is not None:
            data["duration_seconds"] = round((self.finished - self.started).total_seconds(), 3)
        return data

    def summary_dict(self) -> dict[str, Any]:
        """The compact form kept in the state's run history."""
        return {
            "pulled": self.pulled,
            "bad": self.bad,
            "dead_lettered": self.dead_lettered,
            "deferred": self.deferred,
            "sinks": {n: {k: s.get(k) for k in ("accepted", "withdrawn", "skipped", "rejected", "deferred", "error")} for n, s in self.sinks.items()},
            "error": self.error,
        }

    def write(self, folder: Path, *, keep: int = DEFAULT_KEEP_REPORTS) -> Path:
        """Write the report as JSON (mode 0600) into ``folder``; returns its path.

        Each run has its own file, ``<instance>.report.<run_id>.json``, and
        ``<instance>.report.json`` is a hard link to the newest one, so scripts
        that read the latest report keep working. Of the per-run files, the
        newest ``keep`` stay (an audit trail); older ones are deleted.
        """
        folder = private_folder(Path(folder), "log folder")
        path = folder / f"{self.instance}.report.{self.run_id}.json"
        text = json.dumps(self.as_dict(), indent=2, default=str) + "\n"
        write_atomic(path, text.encode("utf-8"), what="the report's temporary file")
        link_atomic(path, folder / f"{self.instance}.report.json")
        self.path = path
        prune_reports(folder, self.instance, keep=keep)
        return path

    def summary_text(self) -> str:
        """A few lines for a person at a terminal or reading cron mail."""
        duration = (self.finished - self.started).total_seconds() if self.finished else 0.0
        label = {0: "ok", 1: "FAILED", 3: "PARTIAL"}.get(self.exit_code, str(self.exit_code))
        head = f"exportkit {self.instance} run {self.run_id} ({self.mode}{', dry run' if self.dry_run else ''}): {label} in {duration:.1f}s"
        lines = [head]
        source = f"  source: {_count(self.pulled, 'record')} pulled"
        if self.bad:
            source += f", {self.bad} malformed (dead-lettered)"
        if self.filtered:
            source += f", {self.filtered} filtered"
        offset = self.window.get("source_clock_offset_s")
        if isinstance(offset, (int, float)) and abs(offset) >= 60:
            # The window follows the source's clock anyway; a large gap is still worth a look.
            source += f"; its clock is {abs(offset)}s {'ahead of' if offset > 0 else 'behind'} this host's"
        lines.append(source)
        for name, s in self.sinks.items():
            parts = [f"{s.get('accepted', 0)} sent", f"{s.get('unchanged', 0)} unchanged"]
            for key, word in (("withdrawn", "withdrawn"), ("skipped", "skipped"), ("rejected", "rejected"), ("deferred", "deferred")):
                if s.get(key):
                    parts.append(f"{s[key]} {word}")
            lines.append(f"  {name}: " + ", ".join(parts))
            if s.get("error"):
                lines.append(f"    error: {s['error']}")
            hidden = set(s.get("notes_report_only") or ())
            for key, value in (s.get("notes") or {}).items():
                if key not in hidden:
                    lines.append(f"    {key}: {_note_text(value)}")
        if self.reconcile.get("ran"):
            lines.append(f"  reconcile: {self.reconcile.get('removed', 0)} removed from the collection")
            for sink, count in (self.reconcile.get("verified") or {}).items():
                lines.append(
                    f"  reconcile: {sink} verified {count}, repaired {(self.reconcile.get('repaired') or {}).get(sink, 0)}, "
                    f"could not repair {(self.reconcile.get('unrepaired') or {}).get(sink, 0)}"
                )
        elif self.reconcile.get("refused"):
            lines.append(f"  reconcile refused, nothing withdrawn: {self.reconcile['refused']}")
        for failure in self.plugin_errors:
            lines.append(f"  plugin {failure['plugin']} failed in {failure['hook']}: {failure['error']}")
        if self.error:
            lines.append(f"  error: {self.error}")
        if self.path:
            lines.append(f"  report: {self.path}")
        # Errors and notes carry outside text (a server's error message): one line each, no control characters.
        return "\n".join(visible(line) for line in lines)


def prune_reports(folder: Path, instance: str, *, keep: int) -> list[Path]:
    """Delete all but the newest ``keep`` per-run reports of ``instance`` in ``folder``; returns the deleted."""
    pattern = re.compile(re.escape(instance) + r"\.report\.[0-9a-f]+\.json")
    runs = []
    for entry in os.scandir(folder):
        if pattern.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
            runs.append((entry.stat(follow_symlinks=False).st_mtime_ns, entry.name))
    runs.sort(reverse=True)
    deleted = []
    for _, name in runs[max(keep, 1):]:
        try:
            os.unlink(folder / name)
            deleted.append(folder / name)
        except FileNotFoundError:  # another process pruned it first
            pass
    return deleted


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _note_text(value: Any) -> str:
    """A sink note as a person reads it: ``created 630, skipped 143`` rather than a Python dict."""
    if isinstance(value, dict):
        return ", ".join(f"{k} {v}" for k, v in value.items()) or "-"
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value) or "-"
    return str(value)


def exit_code_for(report: RunReport, error: BaseException | None) -> int:
    """The exit code for a finished run (see the module docstring)."""
    if isinstance(error, KeyboardInterrupt):  # interrupted at once: saved per batch, the rest waits
        return EXIT_PARTIAL
    if error is not None:
        # A passing source fault (SourceUnavailable) is partial: the next run tries again.
        return EXIT_PARTIAL if getattr(error, "exit_code", EXIT_FATAL) == EXIT_PARTIAL else EXIT_FATAL
    sinks = list(report.sinks.values())
    down = [s for s in sinks if s.get("error") and s.get("error_kind") != "close"]
    if sinks and len(down) == len(sinks) and any(s.get("error_kind") != "transient" for s in down):
        # No sink works and not just for a passing reason: cron must hear of it.
        return EXIT_FATAL
    if report.error or report.plugin_errors:  # stopped early, or a plugin failed in a run hook
        return EXIT_PARTIAL
    if report.reconcile.get("refused"):  # removals not looked for: the next reconcile must try again
        return EXIT_PARTIAL
    # Records dead-lettered by an earlier run and again now (a broken line still in
    # the source) are in the report, but do not make every cron run "partial".
    if report.dead_lettered_new or any(s.get("deferred") or s.get("error") for s in sinks):
        return EXIT_PARTIAL
    if any((report.reconcile.get("unrepaired") or {}).values()):  # held but not live, and not repaired
        return EXIT_PARTIAL
    return EXIT_OK
