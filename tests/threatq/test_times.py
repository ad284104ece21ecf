"""ThreatQ's zone-less timestamps: read and written in the appliance's time zone."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from exportkit.threatq.times import format_tq_time, parse_tq_time, zone


def test_utc_is_the_default_and_has_aliases() -> None:
    for name in ("UTC", "utc", "Etc/UTC", "GMT", "Z"):
        assert zone(name) is timezone.utc
    moment = datetime(2024, 5, 6, 7, 8, 9, tzinfo=timezone.utc)
    assert format_tq_time(moment) == "2024-05-06 07:08:09"
    assert parse_tq_time("2024-05-06 07:08:09") == moment


@pytest.mark.parametrize(
    ("name", "wall", "utc"),
    [
        ("Asia/Kolkata", "2024-01-01 05:30:00", datetime(2024, 1, 1, tzinfo=timezone.utc)),
        ("Europe/Berlin", "2024-07-01 02:00:00", datetime(2024, 7, 1, tzinfo=timezone.utc)),  # summer time
        ("Europe/Berlin", "2024-01-01 01:00:00", datetime(2024, 1, 1, tzinfo=timezone.utc)),
        ("America/New_York", "2023-12-31 19:00:00", datetime(2024, 1, 1, tzinfo=timezone.utc)),
    ],
)
def test_wall_clock_times_of_the_zone_round_trip(name: str, wall: str, utc: datetime) -> None:
    tz = zone(name)
    assert parse_tq_time(wall, tz) == utc
    assert format_tq_time(utc, tz) == wall


def test_times_with_a_zone_keep_it_and_empty_is_none() -> None:
    tz = zone("Asia/Kolkata")
    assert parse_tq_time("2024-01-01T00:00:00Z", tz) == datetime(2024, 1, 1, tzinfo=timezone.utc)
    assert parse_tq_time("2024-01-01 00:00:00+01:00", tz) == datetime(2023, 12, 31, 23, tzinfo=timezone.utc)
    assert parse_tq_time(None, tz) is None and parse_tq_time("", tz) is None
    aware = datetime(2024, 1, 1, tzinfo=timezone(timedelta(hours=2)))
    assert parse_tq_time(aware, tz) == datetime(2023, 12, 31, 22, tzinfo=timezone.utc)


def test_bad_values_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown time zone 'Mars/Olympus'"):
        zone("Mars/Olympus")
    with pytest.raises(ValueError):
        parse_tq_time("yesterday-ish", zone("Europe/Berlin"))
    with pytest.raises(ValueError):
        parse_tq_time(12345, zone("Europe/Berlin"))
