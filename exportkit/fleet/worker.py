"""The Celery side of a fleet: the app, the task that runs one instance, the worker and beat.

* Beat (:class:`FleetScheduler`, exactly one in a fleet) reads every
  instance's ``[schedule]`` from its config folder, re-reads it every
  :data:`RESCAN_SECONDS`, and sends ``exportkit.run_instance(NAME)`` when a
  run is due. Each message expires after one interval: a tick that no worker
  took in time is dropped, the next one carries on.
* A worker takes one message at a time per slot (``prefetch 1``) and runs
  ``exportkit run -n NAME -c DIR`` as a child process, so a run is exactly a
  command-line run: same report file, same exit code, same history row.
  The message is acknowledged only after the run (``acks_late``): a worker
  that dies mid-run leaves it to Redis to hand out again after
  ``visibility_timeout``. The instance lock (PostgreSQL advisory lock) makes
  a repeated or concurrent delivery harmless: it exits 4 and does nothing.
  The run killed with its worker resumes from the checkpoint in PostgreSQL
  at the next tick, on any worker.

The broker is any URL Celery takes (``redis://`` is the documented one,
``amqp://`` for RabbitMQ works the same way). ``EXPORTKIT_VISIBILITY_TIMEOUT``
sets Redis's redelivery delay in seconds.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from celery import Celery
from celery.beat import ScheduleEntry, Scheduler
from celery.schedules import BaseSchedule, schedstate

from exportkit.fleet.host import host_name
from exportkit.fleet.schedule import Schedule
from exportkit.fleet.scheduled import scheduled_instances
from exportkit.errors import ExportkitError
from exportkit.report import EXIT_FATAL, EXIT_LOCKED
from exportkit.statelocation import STATE_URL_VARIABLE, state_url

__all__ = ["make_app", "run_worker", "run_beat", "InstanceSchedule", "FleetScheduler", "TASK_NAME", "RESCAN_SECONDS"]

TASK_NAME = "exportkit.run_instance"
#: how often beat looks for instances added, removed or rescheduled in the config folder
RESCAN_SECONDS = 30.0
#: seconds before Redis hands an unacknowledged run to another worker (longer than most runs;
#: a run still going then is protected by its lock)
DEFAULT_VISIBILITY_TIMEOUT = 3600

log = logging.getLogger("exportkit.fleet")


def make_app(broker: str, config_dir: Path, *, loglocation: str | None = None, visibility_timeout: float | None = None) -> Celery:
    """The Celery app of a fleet: late acknowledgement, one message per slot, UTC, no result backend."""
    app = Celery("exportkit", broker=broker)
    timeout = visibility_timeout or float(os.environ.get("EXPORTKIT_VISIBILITY_TIMEOUT", DEFAULT_VISIBILITY_TIMEOUT))
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_default_queue="exportkit",
        enable_utc=True,
        timezone="UTC",
        broker_connection_retry_on_startup=True,
        broker_transport_options={"visibility_timeout": timeout},
        worker_hijack_root_logger=False,
        beat_max_loop_interval=5,
    )
    app.conf.exportkit_config_dir = str(Path(config_dir).resolve())
    app.conf.exportkit_loglocation = loglocation

    @app.task(name=TASK_NAME, bind=True, acks_late=True)  # type: ignore[untyped-decorator]
    def run_instance(self: Any, name: str) -> dict[str, Any]:
        return run_one(name, Path(app.conf.exportkit_config_dir), loglocation=app.conf.exportkit_loglocation)

    return app


def run_one(name: str, config_dir: Path, *, loglocation: str | None = None) -> dict[str, Any]:
    """Run instance ``name`` exactly as ``exportkit run -n NAME -c DIR`` does; returns what happened.

    Exit 4 (another host runs it now) is a normal outcome in a fleet, logged at info.
    An instance whose state is not in PostgreSQL is not run (exit 1, logged as an
    error): its SQLite state would be a different one on every worker host.
    """
    try:
        url = state_url(config_dir, name)
    except ExportkitError as exc:
        log.error("%s: not run: %s", name, exc)
        return {"instance": name, "host": host_name(), "exit_code": EXIT_FATAL, "seconds": 0.0}
    if not url:
        log.error("%s: not run: its state would be a SQLite file on this host; in a fleet set [state] url "
                  "or %s on every worker (and move existing state with 'exportkit state migrate')", name, STATE_URL_VARIABLE)
        return {"instance": name, "host": host_name(), "exit_code": EXIT_FATAL, "seconds": 0.0}
    argv = [sys.executable, "-m", "exportkit", "run", "-n", name, "-c", str(config_dir)]
    if loglocation:
        argv += ["-ll", loglocation]
    started = time.monotonic()
    result = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    outcome = {"instance": name, "host": host_name(), "exit_code": result.returncode,
               "seconds": round(time.monotonic() - started, 3)}
    summary = result.stderr.strip().splitlines()[:1]
    if result.returncode == EXIT_LOCKED:
        log.info("%s: already running elsewhere: %s", name, result.stderr.strip()[-300:])
    elif result.returncode in (0, 3):
        log.info("%s: exit %s in %.1fs: %s", name, result.returncode, outcome["seconds"], summary[0] if summary else "")
    else:
        log.warning("%s: exit %s: %s", name, result.returncode, result.stderr.strip()[-500:])
    return outcome


class InstanceSchedule(BaseSchedule):  # type: ignore[misc]
    """A Celery schedule for one instance: due when its :class:`Schedule` had a run time since the last run."""

    def __init__(self, schedule: Schedule, app: Celery | None = None) -> None:
        super().__init__(app=app)
        self.schedule = schedule

    def now(self) -> datetime:
        return datetime.now(timezone.utc)

    def remaining_estimate(self, last_run_at: datetime) -> timedelta:
        return self.schedule.next_after(_aware(last_run_at)) - self.now()

    def is_due(self, last_run_at: datetime) -> schedstate:
        now = self.now()
        due_at = self.schedule.next_after(_aware(last_run_at))
        if due_at <= now:
            return schedstate(True, (self.schedule.next_after(now) - now).total_seconds())
        return schedstate(False, (due_at - now).total_seconds())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, InstanceSchedule) and other.schedule == self.schedule

    def __repr__(self) -> str:
        return f"<InstanceSchedule {self.schedule.text}>"


def _aware(when: datetime) -> datetime:
    return when if when.tzinfo is not None else when.replace(tzinfo=timezone.utc)


class FleetScheduler(Scheduler):  # type: ignore[misc]
    """Beat's schedule, built from the config folder (``[schedule]`` of each instance) and kept in memory.

    Nothing is persisted: schedules are aligned to the clock, so a restarted
    beat sends the next run on time and a missed tick is simply the next one.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._scanned = 0.0
        super().__init__(*args, **kwargs)

    def setup_schedule(self) -> None:
        self._rescan()

    def _entries(self) -> dict[str, ScheduleEntry]:
        config_dir = Path(self.app.conf.exportkit_config_dir)
        out = {}
        for name, schedule in scheduled_instances(config_dir, log=log).items():
            period = (schedule.next_after(datetime.now(timezone.utc)) - datetime.now(timezone.utc)).total_seconds()
            expires = schedule.every.total_seconds() if schedule.every is not None else max(period, 60.0)
            out[name] = ScheduleEntry(
                name=name, task=TASK_NAME, args=(name,), schedule=InstanceSchedule(schedule, app=self.app),
                options={"expires": expires}, app=self.app, last_run_at=datetime.now(timezone.utc),
            )
        return out

    def _rescan(self) -> None:
        self._scanned = time.monotonic()
        wanted = self._entries()
        current = self.schedule
        for name in list(current):
            if name not in wanted:
                log.info("%s: no longer scheduled", name)
                del current[name]
        for name, entry in wanted.items():
            if name not in current or current[name].schedule != entry.schedule:
                log.info("%s: scheduled %s", name, entry.schedule.schedule.text)
                current[name] = entry

    def tick(self, *args: Any, **kwargs: Any) -> float:
        if time.monotonic() - self._scanned >= RESCAN_SECONDS:
            self._rescan()
        return float(min(super().tick(*args, **kwargs), RESCAN_SECONDS))


def run_worker(broker: str, config_dir: Path, *, concurrency: int = 2, hostname: str | None = None,
               loglevel: str = "INFO", loglocation: str | None = None) -> int:
    """Run a Celery worker for the fleet until it is stopped (SIGTERM: finish the runs in progress)."""
    app = make_app(broker, config_dir, loglocation=loglocation)
    # Threads are enough: each run is a child process of its own.
    argv = ["worker", "--pool", "threads", "--concurrency", str(concurrency), "--loglevel", loglevel,
            "--hostname", hostname or f"exportkit@{host_name()}", "--without-gossip", "--without-mingle"]
    app.worker_main(argv=argv)
    return 0


def run_beat(broker: str, config_dir: Path, *, loglevel: str = "INFO") -> int:
    """Run Celery beat for the fleet until it is stopped. Exactly one beat per fleet."""
    app = make_app(broker, config_dir)
    app.start(argv=["beat", "--scheduler", f"{FleetScheduler.__module__}:{FleetScheduler.__name__}", "--loglevel", loglevel])
    return 0
