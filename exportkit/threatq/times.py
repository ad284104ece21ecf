"""ThreatQ's timestamps: ``YYYY-MM-DD HH:MM:SS`` wall-clock times in the appliance's time zone.

ThreatQ sends and filters times without a zone. They are the appliance's
own wall-clock times: UTC on the appliances ThreatQ's v5 guide sets up, but
not necessarily elsewhere, so the zone is a source setting
(``[source] timezone``) and every parse and every filter bound goes through
here. Inside exportkit every time is an aware UTC datetime.
"""

from __future__ import annotations

from datetime import datetime, timezone, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from exportkit.records import parse_time

__all__ = ["TS_FORMAT", "format_tq_time", "parse_tq_time", "zone"]

TS_FORMAT = "%Y-%m-%d %H:%M:%S"


def zone(name: str) -> tzinfo:
    """The tzinfo for an IANA zone name (``UTC`` gives :data:`datetime.timezone.utc`).

    :raises ValueError: no such zone.
    """
    text = name.strip()
    if text.upper() in ("UTC", "Z", "ETC/UTC", "GMT"):
        return timezone.utc
    try:
        return ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r} (an IANA name such as 'UTC' or 'Europe/Berlin')") from None


def format_tq_time(value: datetime, tz: tzinfo = timezone.utc) -> str:
    """An aware datetime as ThreatQ's ``YYYY-MM-DD HH:MM:SS`` in the appliance's zone ``tz``."""
    return value.astimezone(tz).strftime(TS_FORMAT)


def parse_tq_time(value: Any, tz: tzinfo = timezone.utc) -> datetime | None:
    """A ThreatQ time as an aware UTC datetime; a time without a zone is a wall-clock time in ``tz``.

    ``None`` and ``""`` give ``None``. In a zone with daylight saving time, a
    wall-clock time of the repeated autumn hour is read as its first occurrence.

    :raises ValueError: not a timestamp.
    """
    if tz is timezone.utc and type(value) is str and len(value) == 19:
        # ThreatQ's own form on a UTC appliance, four times per indicator: read as UTC in one
        # step (a quarter of parse-then-replace). A 19-character text with an offset of its
        # own gets a second one here and is refused, so parse_time reads it.
        try:
            return datetime.fromisoformat(value + "+00:00")
        except ValueError:
            pass  # parse_time words the error
    return parse_time(value, tz)
