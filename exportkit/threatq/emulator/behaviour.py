"""Switchable behaviours of a real ThreatQ, so tests can run with them on or off.

Each one models something public ThreatQ clients show a real server doing
(docs/emulators.md says where each comes from). :data:`REALISTIC` turns on
the ones the demo and the end-to-end tests use; the emulator's Python
default is the lenient server, so a unit test switches on only what it is
about. Every field can be changed at run time (``ThreatQEmulator.configure``
or ``POST /_control/behaviour``).
"""

from __future__ import annotations

from datetime import tzinfo
from typing import Any, Mapping

import attrs

from exportkit.threatq.times import zone as _zone

__all__ = ["Behaviour", "REALISTIC"]


@attrs.define
class Behaviour:
    """What the emulated appliance does.

    :ivar page_cap: the most indicators one query page holds, whatever ``limit``
        asked; the answer echoes the capped ``limit`` (``None``: no cap).
    :ivar fields_required: ``attributes`` and ``sources`` are served only when the
        query's ``fields`` names them (ThreatQ since 2026); ``with=`` no longer brings them.
    :ivar touch_only_children: a change to an indicator's sources (or their TLP) or
        attributes moves ``touched_at`` only, not ``updated_at``.
    :ivar sources_without_tlp: sources are served without ``tlp_id``/``tlp_name``.
    :ivar timezone: the appliance's time zone (IANA name): served times and filter
        dates are wall-clock times there.
    :ivar clock_offset: seconds the appliance's clock runs ahead of this host's
        (negative: behind); it stamps changes and the ``Date`` header.
    :ivar search_paging: ``GET /api/search/query`` honours ``limit``/``offset`` and
        sends ``total``; off, it ignores both and sends no ``total``.
    """

    page_cap: int | None = None
    fields_required: bool = False
    touch_only_children: bool = False
    sources_without_tlp: bool = False
    timezone: str = attrs.field(default="UTC")
    clock_offset: float = 0.0
    search_paging: bool = True

    @timezone.validator
    def _check_timezone(self, _attribute: Any, value: str) -> None:
        _zone(value)

    @property
    def tz(self) -> tzinfo:
        """The appliance's zone as a tzinfo (``timezone.utc`` for UTC)."""
        return _zone(self.timezone)

    def configure(self, changes: Mapping[str, Any]) -> dict[str, Any]:
        """Apply ``changes`` (field -> value) and return every field's value.

        :raises KeyError: an unknown field. :raises ValueError: a bad value.
        """
        known = {f.name for f in attrs.fields(Behaviour)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise KeyError(f"unknown behaviour(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        for name, value in changes.items():
            if name == "page_cap":
                value = None if value in (None, 0) else int(value)
                if value is not None and value < 1:
                    raise ValueError("page_cap must be at least 1 (or null for no cap)")
            elif name == "clock_offset":
                value = float(value)
            elif name == "timezone":
                _zone(str(value))
                value = str(value)
            elif not isinstance(value, bool):
                raise ValueError(f"{name} takes true or false")
            setattr(self, name, value)
        return attrs.asdict(self)


#: the behaviours of the real service the demo and end-to-end tests run with
REALISTIC: Mapping[str, Any] = {"page_cap": 300, "fields_required": True, "touch_only_children": True}
