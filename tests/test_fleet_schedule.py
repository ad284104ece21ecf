"""Schedules: every (aligned to the epoch, UTC) and five-field cron; Celery beat's view of them."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from exportkit.fleet.schedule import ScheduleError, parse_schedule
from exportkit.fleet.worker import InstanceSchedule

UTC = timezone.utc
NOW = datetime(2026, 12, 1, 16, 7, 30, tzinfo=UTC)  # a Tuesday


@pytest.mark.parametrize(
    ("every", "expected"),
    [("15m", datetime(2026, 12, 1, 16, 15, tzinfo=UTC)), ("1h", datetime(2026, 12, 1, 17, 0, tzinfo=UTC)),
     ("7s", datetime(2026, 12, 1, 16, 7, 36, tzinfo=UTC)), (90, datetime(2026, 12, 1, 16, 9, tzinfo=UTC))],
)
def test_every_runs_at_multiples_of_the_interval_since_the_epoch(every, expected):
    assert parse_schedule(every=every).next_after(NOW) == expected


def test_every_is_strictly_after_and_the_same_on_every_host():
    schedule = parse_schedule(every="15m")
    on_the_tick = datetime(2026, 12, 1, 16, 15, tzinfo=UTC)
    assert schedule.next_after(on_the_tick) == datetime(2026, 12, 1, 16, 30, tzinfo=UTC)
    assert schedule.text == "every 15m" and parse_schedule(every="90s").text == "every 90s"


@pytest.mark.parametrize(
    ("cron", "expected"),
    [
        ("*/15 * * * *", datetime(2026, 12, 1, 16, 15, tzinfo=UTC)),
        ("0 3 * * 1", datetime(2026, 12, 7, 3, 0, tzinfo=UTC)),  # next Monday
        ("0 3 * * 7", datetime(2026, 12, 6, 3, 0, tzinfo=UTC)),  # 7 is Sunday too
        ("30 2 1 * *", datetime(2027, 1, 1, 2, 30, tzinfo=UTC)),
        ("0 0 29 2 *", datetime(2028, 2, 29, 0, 0, tzinfo=UTC)),
        ("5,10-12/2 8-9 * * *", datetime(2026, 12, 2, 8, 5, tzinfo=UTC)),
        ("0 12 15 * 5", datetime(2026, 12, 4, 12, 0, tzinfo=UTC)),  # both day fields: either matches (Friday the 4th)
    ],
)
def test_cron_next_run(cron, expected):
    assert parse_schedule(cron=cron).next_after(NOW) == expected


@pytest.mark.parametrize(
    ("every", "cron", "message"),
    [
        (None, None, "give 'every'"),
        ("5m", "* * * * *", "not both"),
        (None, "* * * *", "needs 5 fields"),
        (None, "60 * * * *", "outside 0-59"),
        (None, "*/0 * * * *", "outside"),
        (None, "a * * * *", "not a number"),
        ("soon", None, "every:"),
        ("0.5s", None, "shorter than one second"),
    ],
)
def test_schedules_that_cannot_work_are_refused_with_the_reason(every, cron, message):
    with pytest.raises(ScheduleError, match=message):
        parse_schedule(every=every, cron=cron)


def test_a_cron_that_never_matches_says_so():
    with pytest.raises(ScheduleError, match="never matches"):
        parse_schedule(cron="0 0 30 2 *").next_after(NOW)


class FixedNow(InstanceSchedule):
    def __init__(self, schedule, now):
        super().__init__(schedule)
        self._fixed = now

    def now(self):
        return self._fixed


def test_beat_sees_a_run_due_once_per_slot_and_when_to_look_again():
    schedule = parse_schedule(every="15m")
    beat = FixedNow(schedule, NOW)
    due, wait = beat.is_due(datetime(2026, 12, 1, 15, 59, tzinfo=UTC))  # the 16:00 run has not been sent
    assert due and wait == pytest.approx(450)
    due, wait = beat.is_due(datetime(2026, 12, 1, 16, 0, 1, tzinfo=UTC))  # it has
    assert not due and wait == pytest.approx(450)
    due, _ = beat.is_due(datetime(2026, 12, 1, 15, 59))  # naive times are UTC
    assert due
