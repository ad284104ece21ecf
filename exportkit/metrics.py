"""Prometheus metrics as a node_exporter text file, written after each run.

Set ``[export] metrics_file`` to a path in node_exporter's textfile collector
folder (``--collector.textfile.directory``); each run replaces that file
atomically (write beside it, then rename), so the collector never reads half
a file. One file per instance: node_exporter merges every ``*.prom`` file of
the folder, and the ``instance_name`` label keeps instances apart (Prometheus
itself sets ``instance`` to the scrape target, so the label has its own name).

What is in it:

* ``exportkit_last_run_*`` gauges: exit code, start time, duration and the
  counts of the last run, per instance and per sink;
* ``exportkit_last_success_timestamp_seconds``: when the last run that exited
  0 started (kept from the previous file while runs fail, so an alert on
  "no success for 2 hours" works);
* ``exportkit_records_total`` counters per sink and outcome, and
  ``exportkit_runs_total`` per exit code, carried over from the previous file
  and increased by this run (a lost file resets them, which Prometheus
  handles as a counter reset).

The file holds counts and times only, no indicator values and no secrets, so
it is written mode 0644: the collector runs as another user.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable

from exportkit.files import write_atomic
from exportkit.report import RunReport

__all__ = ["write_metrics", "render_metrics", "read_counters", "OUTCOMES"]

#: the per-sink counts a run report carries, in the order they are written
OUTCOMES = ("accepted", "unchanged", "skipped", "rejected", "deferred", "withdrawn")

_SAMPLE = re.compile(r'^(?P<name>[a-z_]+)\{(?P<labels>[^}]*)\} (?P<value>[-+0-9.eE]+|NaN)$')
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def _escape(value: str) -> str:
    """A label value as the text format needs it: backslash, quote and newline escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(**labels: str) -> str:
    return ",".join(f'{key}="{_escape(value)}"' for key, value in labels.items())


def read_counters(path: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The samples of a metrics file this module wrote: ``(name, sorted labels) -> value``.

    A missing or unreadable file gives ``{}`` (counters start again from zero).
    """
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return samples
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match is None:
            continue
        labels = tuple(sorted(_LABEL.findall(match["labels"])))
        try:
            samples[(match["name"], labels)] = float(match["value"])
        except ValueError:
            continue
    return samples


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def render_metrics(report: RunReport, previous: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> str:
    """The text file for ``report``, with counters carried over from ``previous``."""
    instance = report.instance
    out: list[str] = []

    def family(name: str, kind: str, help_text: str, samples: Iterable[tuple[dict[str, str], float]]) -> None:
        out.append(f"# HELP {name} {help_text}")
        out.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            out.append(f"{name}{{{_labels(**labels)}}} {_number(value)}")

    def carried(name: str, **labels: str) -> float:
        return previous.get((name, tuple(sorted(labels.items()))), 0.0)

    base = {"instance_name": instance}
    started = report.started.timestamp()
    duration = (report.finished - report.started).total_seconds() if report.finished else 0.0
    family("exportkit_last_run_exit_code", "gauge", "Exit code of the last run (0 ok, 1 failed, 3 partial, 4 locked).",
           [(base, report.exit_code)])
    family("exportkit_last_run_timestamp_seconds", "gauge", "When the last run started (Unix time).", [(base, started)])
    family("exportkit_last_run_duration_seconds", "gauge", "How long the last run took.", [(base, duration)])
    family("exportkit_last_run_records_pulled", "gauge", "Records the last run pulled from the source.", [(base, report.pulled)])
    last_success = started if report.exit_code == 0 and not report.dry_run else carried("exportkit_last_success_timestamp_seconds", **base)
    family("exportkit_last_success_timestamp_seconds", "gauge", "When the last run that exited 0 started (0: none yet).",
           [(base, last_success)])
    per_sink = [
        ({**base, "sink": sink, "outcome": outcome}, counts.get(outcome, 0) or 0)
        for sink, counts in sorted(report.sinks.items())
        for outcome in OUTCOMES
    ]
    family("exportkit_last_run_records", "gauge", "Records of the last run per sink and outcome.", per_sink)
    counted = 0 if report.dry_run else 1  # a dry run delivers nothing: it does not count
    totals = [(labels, carried("exportkit_records_total", **labels) + counted * value) for labels, value in per_sink]
    family("exportkit_records_total", "counter", "Records per sink and outcome, over all runs.", totals)
    runs = {code: carried("exportkit_runs_total", **base, exit_code=code) for code in ("0", "1", "3", "4")}
    if not report.dry_run:
        runs[str(report.exit_code)] = runs.get(str(report.exit_code), 0.0) + 1
    family("exportkit_runs_total", "counter", "Runs per exit code.", [({**base, "exit_code": c}, n) for c, n in sorted(runs.items())])
    return "\n".join(out) + "\n"


def write_metrics(path: Path, report: RunReport) -> Path:
    """Replace ``path`` with the metrics of ``report`` (atomically, mode 0644).

    :raises OSError: the folder cannot be written (the caller logs it; a run's
        outcome never depends on its metrics).
    """
    path = Path(path)
    text = render_metrics(report, read_counters(path))
    # exportkit's one way to write a file: a fresh hidden temporary (O_EXCL, never a
    # followed link; node_exporter reads only *.prom) renamed into place. 0644 because
    # node_exporter runs as another user.
    return write_atomic(path, text.encode("utf-8"), what="the metrics file", mode=0o644)
