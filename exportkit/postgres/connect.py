"""Connections to the PostgreSQL state database: one place for options, keepalives and clean errors.

psycopg 3 is an optional dependency (``pip install 'exportkit-core[fleet]'``);
a missing driver, an unreachable server or a refused login becomes an
:class:`~exportkit.errors.ExportkitError` whose message names the database
without its password.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator
from urllib.parse import urlsplit, urlunsplit

from exportkit.errors import ExportkitError
from exportkit.secrets import redact, register

__all__ = ["connect", "display_url", "is_postgres_url", "KEEPALIVES", "StateUnavailable", "translate_errors"]

#: client-side TCP keepalives: a worker notices a vanished server within about a minute
KEEPALIVES = {"keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10, "keepalives_count": 3}


def is_postgres_url(url: str | None) -> bool:
    """True for a ``postgresql://`` (or ``postgres://``) URL."""
    return bool(url) and str(url).startswith(("postgresql://", "postgres://"))


def display_url(url: str) -> str:
    """``url`` without its password (and without query options), for messages and listings."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = (f"{parts.username}@" if parts.username else "") + host + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


class StateUnavailable(ExportkitError):
    """The PostgreSQL state went away during a run (server down, connection cut); the last committed batch stands."""


@contextmanager
def translate_errors(where: str) -> Iterator[None]:
    """Turn a lost connection (psycopg's ``OperationalError``) into :class:`StateUnavailable`; other errors pass."""
    try:
        yield
    except Exception as exc:
        if type(exc).__module__.startswith("psycopg") and _is_operational(exc):
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise StateUnavailable(f"lost the PostgreSQL state {where}: {redact(first)}") from None
        raise


def _is_operational(exc: BaseException) -> bool:
    import psycopg

    return isinstance(exc, psycopg.OperationalError)


def connect(url: str, *, purpose: str, application_name: str | None = None) -> Any:
    """An autocommit psycopg connection to ``url``.

    :param purpose: what the connection is for, in the error message ("state prod", "lock prod").
    :param application_name: shown in ``pg_stat_activity`` (defaults to ``exportkit``).
    :raises ExportkitError: psycopg is missing, or the server cannot be reached or refuses the login.
    """
    try:
        import psycopg
    except ImportError:
        raise ExportkitError(
            "PostgreSQL state needs psycopg 3: pip install 'exportkit-core[fleet]' (or 'psycopg[binary]')"
        ) from None
    password = urlsplit(url).password
    if password:
        register(password)  # never in a message, even if a driver error quotes the URL
    try:
        options: dict[str, Any] = {"connect_timeout": 15, "application_name": (application_name or "exportkit")[:63], **KEEPALIVES}
        return psycopg.connect(url, autocommit=True, **options)
    except psycopg.Error as exc:
        reason = redact(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
        raise ExportkitError(f"cannot connect to the PostgreSQL state {display_url(url)} ({purpose}): {reason}") from None
