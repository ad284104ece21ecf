"""``exportkit run``: one run of one instance, with the connector's flags."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any, Callable

import click

from exportkit.cli import cli
from exportkit.cli.common import HistoricalWindow, config_option, load, resolve_name
from exportkit.config import config_path, validate_instance_name
from exportkit.engine import Progress, RunOptions, run_instance
from exportkit.report import RunReport
from exportkit.errors import ExportkitError, LockedError
from exportkit.escape import visible
from exportkit.files import open_private
from exportkit.logs import LOG_FORMATS, configure_logging, run_logger
from exportkit.plan import PlanWriter
from exportkit.transport import abort_requests

#: seconds a stop request waits for requests in flight before cutting them
STOP_GRACE = 5.0

__all__ = ["run", "run_options", "execute_run"]


def run_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """The connector's flags, shared by ``exportkit run`` and ``tq-conn-ctr-exporter``."""
    options: list[Callable[[Callable[..., Any]], Callable[..., Any]]] = [
        click.option("-ll", "--loglocation", default=None, help='Log folder, or "stdout". Default: the config folder.'),
        config_option,
        click.option("-v", "--verbosity", type=click.IntRange(1, 3), default=1, show_default=True, help="1 warning, 2 info, 3 debug."),
        click.option("-ep", "--external-proxy", "external_proxy", is_flag=True, help="Send sink traffic through export.proxy (ThreatQ traffic never is)."),
        click.option("-hist", "--historical", type=HistoricalWindow(), default=None, help="Export a fixed window FROM[..TO] (dates or ages like 30d); never moves the checkpoint."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


class ProgressLine:
    """A one-line progress display on a terminal's stderr; silent elsewhere.

    Shows the stage (pull, reconcile, ...), the count, the rate and, when the
    source knows its total, a bar and the time left.

    :param enabled: draw at all (only on a terminal, and not when the log goes to stdout).
    :param clock: seconds, monotonic (tests pass their own).
    :param write: where the text goes (default: stderr without a newline).
    """

    WIDTH = 30

    def __init__(
        self,
        enabled: bool,
        *,
        clock: Callable[[], float] = time.monotonic,
        write: Callable[[str], None] | None = None,
    ) -> None:
        self.enabled = enabled
        self.clock = clock
        self.write = write or (lambda text: click.echo(text, err=True, nl=False))
        self.started = clock()
        self.last = 0.0
        self.stage: str | None = None
        self.width = 0

    def render(self, progress: Progress, now: float) -> str:
        """The line for ``progress`` at ``now`` (without the carriage return)."""
        if progress.stage != self.stage:  # each stage has its own rate and time left
            self.stage, self.started = progress.stage, now
        elapsed = max(now - self.started, 1e-6)
        rate = progress.done / elapsed
        if progress.total:
            share = min(progress.done / progress.total, 1.0)
            bar = "#" * int(share * self.WIDTH)
            left = (progress.total - progress.done) / rate if rate > 0 else None
            eta = f", {_duration(left)} left" if left is not None and progress.done < progress.total else ""
            return f"  {progress.stage}: [{bar:<{self.WIDTH}}] {progress.done:,}/{progress.total:,} records, {rate:,.0f}/s{eta}"
        return f"  {progress.stage}: {progress.done:,} records, {rate:,.0f}/s"

    def __call__(self, progress: Progress) -> None:
        now = self.clock()
        if not self.enabled or now - self.last < 0.2:
            return
        self.last = now
        text = self.render(progress, now)
        # Pad over what a longer previous line left on the screen.
        self.write("\r" + text.ljust(self.width))
        self.width = max(self.width, len(text))

    def done(self) -> None:
        if self.enabled and self.last:
            self.write("\r" + " " * max(self.width, 72) + "\r")


def _duration(seconds: float) -> str:
    seconds = int(seconds + 0.5)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


def execute_run(
    *,
    name: str,
    config_dir: Path,
    loglocation: str | None,
    verbosity: int,
    external_proxy: bool,
    historical: Any,
    dry_run: bool = False,
    reconcile: bool = False,
    as_json: bool = False,
    log_format: str = "text",
    plan: str | None = None,
    default_sinks: tuple[str, ...] = ("stdout",),
) -> int:
    """Run one instance and return the exit code (first-run setup when it has no config yet)."""
    validate_instance_name(name)
    if not config_path(config_dir, name).exists():
        from exportkit.cli.commands_setup import first_run

        return first_run(name=name, config_dir=config_dir, default_sinks=default_sinks)
    log_dir = None if loglocation == "stdout" else Path(loglocation or config_dir)
    log_handler = configure_logging(name, loglocation or str(config_dir), verbosity, log_format=log_format)
    try:
        config, registry = load(config_dir, name)
    except ExportkitError as exc:
        # cron mails stderr, but whoever reads the log should see why runs stop too.
        run_logger("cli", instance=name, run_id="-").error("%s", exc)
        raise
    if plan is not None and not dry_run:
        raise click.UsageError("--plan goes with --dry-run: a plan says what a run would do, without doing it")
    _refuse_shared_stdout(config, loglocation=loglocation, as_json=as_json, plan=plan)
    for warning in config.warnings:
        # On every run, in the log and in cron's mail: these weaken what SECURITY.md promises.
        run_logger("cli", instance=name, run_id="-").warning("%s", warning)
        click.echo(f"Warning: {visible(warning)}", err=True)
    progress = ProgressLine(sys.stderr.isatty() and loglocation != "stdout")
    stop = _StopRequest()
    with contextlib.ExitStack() as stack:
        plan_writer = None
        if plan is not None:
            stream = sys.stdout if plan == "-" else stack.enter_context(_plan_file(Path(plan)))
            plan_writer = PlanWriter(stream)
        options = RunOptions(
            historical=historical, dry_run=dry_run, reconcile=reconcile, use_proxy=external_proxy, progress=progress,
            should_stop=stop.requested, plan=plan_writer,
        )
        report = _run_with_signals(config, registry, options, log_dir, stop, progress, log_handler, name)
    click.echo(report.summary_text(), err=True)
    if plan_writer is not None and plan != "-":
        click.echo(f"  plan: {plan_writer.lines} lines in {plan}", err=True)
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2, default=str))
    return report.exit_code


def _plan_file(path: Path) -> IO[str]:
    """The plan file: created 0600 (it holds indicator values), replaced if it exists, never through a link."""
    fd = open_private(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, what="the plan file")
    return os.fdopen(fd, "w", encoding="utf-8")


def _run_with_signals(
    config: Any, registry: Any, options: RunOptions, log_dir: Path | None, stop: Any, progress: Any, log_handler: Any, name: str
) -> RunReport:
    """Run with SIGTERM/SIGINT asking for a clean stop; restore the handlers afterwards."""
    previous = {sig: signal.signal(sig, stop.handle) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        return run_instance(config, registry, options, report_dir=log_dir)
    except LockedError as exc:
        run_logger("cli", instance=name, run_id="-").warning("%s", exc)
        raise
    finally:
        stop.cancel()
        for sig, old in previous.items():
            signal.signal(sig, old)
        progress.done()
        if log_handler is not None:
            log_handler.flush()


def _refuse_shared_stdout(config: Any, *, loglocation: str | None, as_json: bool, plan: str | None = None) -> None:
    """Refuse a run where two writers would interleave on standard output (exit 2)."""
    writers = [f"sink {sink} (path \"-\")" for sink in config.sinks_on_standard_output()]
    if plan == "-":
        writers.append("the plan (--plan -)")
    if loglocation == "stdout":
        writers.append("the log (-ll stdout)")
    if as_json:
        writers.append("the JSON report (--json)")
    if len(writers) > 1:
        raise click.UsageError(
            f"{' and '.join(writers)} would all write to standard output, mixed line by line; "
            "give the log a folder (-ll DIR), drop --json (the report is also written to a file), "
            "or set the sink's path to a file"
        )


class _StopRequest:
    """SIGTERM (cron, systemd) or Ctrl-C: the first asks the run to end after the current batch,
    saving everything; requests still in flight :data:`STOP_GRACE` seconds later are cut (a
    server that drips its answer must not hold the run and its lock). A second one interrupts
    at once (state is still saved per batch)."""

    def __init__(self) -> None:
        self._count = 0
        self._timer: threading.Timer | None = None

    def handle(self, signum: int, frame: Any) -> None:
        self._count += 1
        reason = f"stop requested ({signal.Signals(signum).name})"
        if self._count > 1:
            abort_requests(reason)
            raise KeyboardInterrupt
        click.echo("\nStopping after the current batch (again to stop at once) ...", err=True)
        self._timer = threading.Timer(STOP_GRACE, abort_requests, args=(reason,))
        self._timer.daemon = True
        self._timer.start()

    def requested(self) -> bool:
        return self._count > 0

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()


@cli.command()
@click.option("-n", "--name", default=None, help="Instance name (default: the only instance in the config folder).")
@run_options
@click.option("--dry-run", is_flag=True, help="Pull, map and validate; send nothing and move nothing.")
@click.option("--reconcile", is_flag=True, help="Also withdraw records that left the collection, whatever the schedule.")
@click.option("--json", "as_json", is_flag=True, help="Print the run report as JSON on stdout.")
@click.option("--log-format", type=click.Choice(LOG_FORMATS), default="text", show_default=True, help="Log lines as text, or one JSON object per line.")
@click.option("--plan", metavar="FILE", default=None, help="With --dry-run: one JSON line per record per sink saying what the run would do ('-': stdout).")
def run(name: str | None, config_dir: Path, **options: Any) -> None:
    """Run an instance once: pull what changed, send it to every sink, move the checkpoint.

    \b
    Exit codes: 0 all delivered, 1 fatal, 2 usage, 3 partial (deferred or
    dead-lettered records), 4 the instance is already running.

    \b
    Example:
      exportkit run -n prod -c /etc/exportkit -ll /var/log/exportkit -v 2
      exportkit run -n prod -c /etc/exportkit -hist 2024-01-01..2024-02-01
      exportkit run -n prod -c /etc/exportkit --dry-run --plan plan.jsonl
    """
    sys.exit(execute_run(name=resolve_name(config_dir, name), config_dir=config_dir, **options))
