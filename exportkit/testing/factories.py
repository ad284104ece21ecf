"""Record factories: valid :class:`~exportkit.records.Indicator` objects for tests."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any


from exportkit.records import Indicator
from exportkit.threatq.vocabulary import canonical_type

__all__ = ['FIXED_TIME', 'make_indicator', 'make_indicators']

#: the ``updated_at`` of :func:`make_indicator` records (and the harness's default run time)
FIXED_TIME = datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone.utc)

_DEFAULTS: dict[str, Any] = {
    "source": "ThreatQ",
    "source_id": "1",
    "value": "203.0.113.1",
    "type_name": "IP Address",
    "status": "Active",
    "score": 7.5,
    "tlp": "amber",
    "tags": ("test",),
    "sources": ("Test Feed",),
    "description": "",
    "created_at": FIXED_TIME - timedelta(days=1),
    "updated_at": FIXED_TIME,
    "link": None,
}


# --- Records ----------------------------------------------------------------------


def make_indicator(**overrides: Any) -> Indicator:
    """A valid record: an Active IP address, score 7.5, TLP amber, updated at :data:`FIXED_TIME`.

    Any field can be overridden. When ``type_name`` is given without ``type``,
    the canonical type follows it (``make_indicator(type_name="FQDN", value="a.example")``).
    ``link`` defaults to a ThreatQ-style link for the source id.
    """
    fields = dict(_DEFAULTS)
    fields.update(overrides)
    if "type" not in overrides:
        fields["type"] = canonical_type(str(fields["type_name"]))
    if "link" not in overrides:
        fields["link"] = f"https://tq.example.com/indicators/{fields['source_id']}/details"
    return Indicator.create(**fields)


def make_indicators(n: int, *, start: int = 1, **overrides: Any) -> list[Indicator]:
    """``n`` records with unique ids (``start``, ``start+1``, ...) and unique IP values.

    Record ``i`` is updated ``i`` seconds after :data:`FIXED_TIME`, so the list is
    in source order. An override that is callable is called with the record's
    id number, for per-record values: ``make_indicators(3, value=lambda i: f"h{i}.example")``.
    """
    out = []
    for i in range(start, start + n):
        fields: dict[str, Any] = {
            "source_id": str(i),
            "value": f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}",
            "updated_at": FIXED_TIME + timedelta(seconds=i),
        }
        for key, value in overrides.items():
            fields[key] = value(i) if callable(value) else value
        out.append(make_indicator(**fields))
    return out
