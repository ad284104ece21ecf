"""The ``[state]`` and ``[schedule]`` tables of an instance config: where its state lives, when a fleet runs it.

``[state] url = "postgresql://user:env:...@host/db"`` is not how a secret is
given: the whole URL is the secret (``url = "env:EXPORTKIT_STATE_URL"`` or
``url = "file:/etc/exportkit/state-url"``, or a literal in a 0600 file).
Without ``[state] url`` the fleet-wide ``EXPORTKIT_STATE_URL`` applies, and
without that the state is the SQLite file beside the config.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Iterable

import attrs

from exportkit.fleet.schedule import Schedule, ScheduleError, parse_schedule
from exportkit.secrets import Secret
from exportkit.settings import setting

__all__ = ["StateSettings", "ScheduleSettings"]


def _check_state_url(value: Any) -> str | None:
    text = value.reveal() if isinstance(value, Secret) else str(value or "")
    if value is not None and not text.startswith(("postgresql://", "postgres://")):
        return "must be a postgresql:// URL (leave [state] out for the SQLite file beside the config)"
    return None


@attrs.frozen
class StateSettings:
    """The ``[state]`` table: where this instance keeps its checkpoint, holdings, dead letters and history."""

    url: Secret | None = setting(
        None,
        help="PostgreSQL URL of the state database (postgresql://USER:PASSWORD@HOST:PORT/DB), for state and lock "
        "shared by several hosts; without it EXPORTKIT_STATE_URL, and without that the SQLite file beside the config. "
        "The whole URL is a secret: a literal, `env:NAME` or `file:PATH`.",
        example='"env:EXPORTKIT_STATE_URL"',
        check=_check_state_url,
    )


@attrs.frozen
class ScheduleSettings:
    """The ``[schedule]`` table: when ``exportkit fleet beat`` sends this instance to a worker."""

    every: timedelta | None = setting(
        None, help='Run at every multiple of this interval since the epoch, in UTC ("15m" runs at :00, :15, :30, :45).'
    )
    cron: str | None = setting(
        None, help='Run on a five-field cron expression, in UTC ("*/15 * * * *"); instead of every.', example='"*/15 * * * *"'
    )

    def check(self) -> Iterable[tuple[str, str]]:
        if self.every is None and self.cron is None:
            return
        try:
            parse_schedule(self.every, self.cron)
        except ScheduleError as exc:
            yield ("cron" if self.cron is not None else "every", str(exc))

    @property
    def schedule(self) -> Schedule | None:
        """The parsed schedule, or ``None`` when the instance is not scheduled."""
        if self.every is None and self.cron is None:
            return None
        return parse_schedule(self.every, self.cron)
