"""When an instance runs in a fleet: ``[schedule] every = "15m"`` or ``cron = "*/15 * * * *"``.

A schedule only answers "when is the next run after this moment"; Celery beat
does the scheduling (:mod:`exportkit.fleet.beat`). Both forms are in UTC and
stateless, so every host computes the same times and ``exportkit fleet
status`` shows the next run beat will send:

* ``every``: runs at the multiples of the interval since the Unix epoch
  (``every = "15m"`` runs at :00, :15, :30 and :45, whichever host runs beat,
  and a restarted beat keeps the rhythm).
* ``cron``: the five classic fields (minute, hour, day of month, month, day of
  week with 0 or 7 for Sunday), each ``*``, ``N``, ``A-B``, ``*/S``,
  ``A-B/S`` or a comma list of those. When both day fields are restricted, a
  day matching either counts (as in cron).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import attrs

from exportkit.settings import parse_duration

__all__ = ["Schedule", "CronExpression", "ScheduleError", "parse_schedule"]

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
#: the shortest interval: a run every few seconds is for tests, below that is a mistake
MIN_EVERY = timedelta(seconds=1)


class ScheduleError(ValueError):
    """A schedule that cannot be understood (the message says what is wrong)."""


_FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31), ("month", 1, 12), ("day of week", 0, 7))


def _parse_field(text: str, name: str, low: int, high: int) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        body, _, step_text = part.partition("/")
        try:
            step = int(step_text) if step_text else 1
            if body == "*":
                start, end = low, high
            elif "-" in body:
                a, b = body.split("-", 1)
                start, end = int(a), int(b)
            else:
                start = int(body)
                end = high if step_text else start
        except ValueError:
            raise ScheduleError(f"cron {name} field {text!r}: {part!r} is not a number, range or */step") from None
        if step < 1 or not (low <= start <= high and low <= end <= high) or start > end:
            raise ScheduleError(f"cron {name} field {text!r}: {part!r} is outside {low}-{high}")
        values.update(range(start, end + 1, step))
    return frozenset(values)


@attrs.frozen
class CronExpression:
    """A parsed five-field cron expression (UTC)."""

    text: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Monday ... 6 = Sunday (Python's numbering)
    days_restricted: bool
    weekdays_restricted: bool

    @classmethod
    def parse(cls, text: str) -> CronExpression:
        fields = text.split()
        if len(fields) != 5:
            raise ScheduleError(f"cron {text!r} needs 5 fields (minute hour day-of-month month day-of-week), it has {len(fields)}")
        parsed = [_parse_field(f, name, low, high) for f, (name, low, high) in zip(fields, _FIELDS)]
        # cron counts Sunday as 0 or 7, Monday as 1; Python's weekday() has Monday 0 ... Sunday 6.
        weekdays = frozenset((d - 1) % 7 for d in parsed[4])
        return cls(text, parsed[0], parsed[1], parsed[2], parsed[3], weekdays, fields[2] != "*", fields[4] != "*")

    def _day_matches(self, when: datetime) -> bool:
        day_ok, weekday_ok = when.day in self.days, when.weekday() in self.weekdays
        if self.days_restricted and self.weekdays_restricted:
            return day_ok or weekday_ok
        return day_ok and weekday_ok

    def next_after(self, moment: datetime) -> datetime:
        """The first matching minute strictly after ``moment``."""
        when = moment.astimezone(timezone.utc).replace(second=0, microsecond=0) + timedelta(minutes=1)
        limit = when + timedelta(days=366 * 5)  # "30 2 30 2 *" (30 February) never matches
        while when < limit:
            if when.month not in self.months:
                when = (when.replace(day=1, hour=0, minute=0) + timedelta(days=32)).replace(day=1)
            elif not self._day_matches(when):
                when = when.replace(hour=0, minute=0) + timedelta(days=1)
            elif when.hour not in self.hours:
                when = when.replace(minute=0) + timedelta(hours=1)
            elif when.minute not in self.minutes:
                when += timedelta(minutes=1)
            else:
                return when
        raise ScheduleError(f"cron {self.text!r} never matches a real date")


@attrs.frozen
class Schedule:
    """When one instance runs: every ``every`` (aligned to the epoch) or on ``cron``."""

    every: timedelta | None = None
    cron: CronExpression | None = None

    def __attrs_post_init__(self) -> None:
        if (self.every is None) == (self.cron is None):
            raise ScheduleError("a schedule has exactly one of 'every' and 'cron'")

    @property
    def text(self) -> str:
        """How the config file says it (``every 15m`` or ``cron */15 * * * *``)."""
        if self.cron is not None:
            return f"cron {self.cron.text}"
        assert self.every is not None
        return f"every {_format_every(self.every)}"

    def next_after(self, moment: datetime) -> datetime:
        """The first run time strictly after ``moment`` (aware, UTC)."""
        if self.cron is not None:
            return self.cron.next_after(moment)
        assert self.every is not None
        period = self.every.total_seconds()
        elapsed = (moment - _EPOCH).total_seconds()
        slot = (elapsed // period + 1) * period
        return _EPOCH + timedelta(seconds=slot)


def _format_every(every: timedelta) -> str:
    seconds = int(every.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0 and seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def parse_schedule(every: Any = None, cron: str | None = None) -> Schedule:
    """A :class:`Schedule` from the ``[schedule]`` table's values.

    :raises ScheduleError: neither or both are given, or one is not understood.
    """
    if every is not None and cron is not None:
        raise ScheduleError("give either 'every' or 'cron', not both")
    if cron is not None:
        return Schedule(cron=CronExpression.parse(cron))
    if every is None:
        raise ScheduleError("give 'every' (like \"15m\") or 'cron' (like \"*/15 * * * *\")")
    try:
        interval = parse_duration(every)
    except ValueError as exc:
        raise ScheduleError(f"every: {exc}") from None
    if interval < MIN_EVERY:
        raise ScheduleError(f"every: {every!r} is shorter than one second")
    return Schedule(every=interval)
