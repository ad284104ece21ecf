"""The instance lock of PostgreSQL state: a session advisory lock, one run per instance across every host.

The lock is held by a connection of its own for the whole run. PostgreSQL
releases a session advisory lock when its connection ends, so a run that
crashes, is killed, or whose host vanishes never leaves a stale lock: a
killed process's socket closes at once, and a host that disappears is
noticed by the server's TCP keepalives (set on the lock's session to about a
minute). The lock key is ``(LOCK_NAMESPACE, instance id)``.

The holder also writes who it is (host, pid, since) into
``exportkit.lock_holders``, so that a refused run can say where the
instance is running; a row counts only while its backend still holds the lock.

Connection poolers in transaction mode (pgbouncer's default) break session
locks: point exportkit at PostgreSQL itself or at a session-mode pool.
"""

from __future__ import annotations

import os
from datetime import datetime, timezone
from typing import Any

from exportkit.fleet.host import host_name
from exportkit.errors import LockedError
from exportkit.postgres.connect import connect, display_url
from exportkit.postgres.schema import LOCK_NAMESPACE, migrate
from exportkit.postgres.state import ensure_instance
from exportkit.records import format_time

__all__ = ["AdvisoryLock", "lock_holders"]

# The server drops a vanished client's session (and its lock) after idle + interval * count seconds.
_SERVER_KEEPALIVES = "SET tcp_keepalives_idle = 30; SET tcp_keepalives_interval = 10; SET tcp_keepalives_count = 3"

_HOLDERS_SQL = """
SELECT i.name, h.host, h.pid, h.since, a.client_addr::text, l.pid
FROM pg_locks l
JOIN exportkit.instances i ON l.objid = i.id
LEFT JOIN exportkit.lock_holders h ON h.instance = i.name AND h.backend_pid = l.pid
LEFT JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.classid = %s AND l.objsubid = 2 AND l.granted AND l.database = (
    SELECT oid FROM pg_database WHERE datname = current_database())
"""


def lock_holders(conn: Any) -> dict[str, dict[str, Any]]:
    """Instance name -> ``{"host", "pid", "since"}`` for every instance whose lock is held now.

    ``host`` falls back to the client address, and ``pid`` to ``None``, in the
    moment between a run taking the lock and writing its name.
    """
    out: dict[str, dict[str, Any]] = {}
    for name, host, pid, since, client_addr, _backend in conn.execute(_HOLDERS_SQL, (LOCK_NAMESPACE,)).fetchall():
        out[name] = {"host": host or client_addr or "unknown host", "pid": pid, "since": since}
    return out


class AdvisoryLock:
    """Hold the PostgreSQL lock of one instance; use as a context manager.

    :param url: the state database.
    :param instance: the instance name.
    :raises LockedError: (on enter) another run of the instance holds it; the message names its host and pid.
    """

    def __init__(self, url: str, instance: str) -> None:
        self.url = url
        self.instance = instance
        self._conn: Any = None

    def acquire(self) -> None:
        host, pid = host_name(), os.getpid()
        conn = connect(self.url, purpose=f"lock {self.instance}", application_name=f"exportkit lock {self.instance}")
        try:
            migrate(conn, display_url(self.url))  # the tables must exist before the first lock
            key = ensure_instance(conn, self.instance)
            conn.execute(_SERVER_KEEPALIVES)
            got = conn.execute("SELECT pg_try_advisory_lock(%s, %s)", (LOCK_NAMESPACE, key)).fetchone()[0]
            if not got:
                holder = lock_holders(conn).get(self.instance)
                raise _refusal(self.instance, holder)
            conn.execute(
                "INSERT INTO exportkit.lock_holders VALUES (%s, %s, %s, pg_backend_pid(), %s) ON CONFLICT (instance) DO UPDATE SET "
                "host = excluded.host, pid = excluded.pid, backend_pid = excluded.backend_pid, since = excluded.since",
                (self.instance, host, pid, format_time(datetime.now(timezone.utc))),
            )
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    def release(self) -> None:
        if self._conn is not None:
            try:
                self._conn.execute("SELECT pg_advisory_unlock_all()")
            except Exception:
                pass  # closing the connection releases it anyway
            self._conn.close()
            self._conn = None

    @property
    def held(self) -> bool:
        return self._conn is not None and not self._conn.closed

    def __enter__(self) -> AdvisoryLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _refusal(instance: str, holder: dict[str, Any] | None) -> LockedError:
    if holder is None:  # released between our try and our look: say so rather than guess
        return LockedError(f"instance {instance!r} is already running (its lock was just released; try again)", pid=None)
    pid = holder["pid"]
    who = f"on host {holder['host']}" + (f", process {pid}" if pid else "")
    since = f", since {holder['since']}" if holder.get("since") else ""
    return LockedError(f"instance {instance!r} is already running {who}{since} (PostgreSQL advisory lock)", pid=pid)
