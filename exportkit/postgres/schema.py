"""The PostgreSQL state schema: one database for a whole fleet, the same versions as SQLite's.

Every instance's state lives in the tables of the PostgreSQL schema
``exportkit``, keyed by instance name (SQLite keeps one file per instance
instead). The schema version is the row of ``exportkit.schema_version``; its
numbers are :data:`exportkit.migrations.SCHEMA_VERSION`'s, so one release
writes one version in both backends. PostgreSQL state starts at version 2
(the first release with this backend); each later step has a SQLite form in
:mod:`exportkit.migrations` and a PostgreSQL form in :data:`STEPS` here
(``tests/test_postgres_schema.py`` fails when one is missing).

:func:`migrate` runs on every open, in one transaction under a transaction
advisory lock, so workers that start together migrate once; DDL is
transactional in PostgreSQL, so a failing step leaves the database as it
was. A newer schema is refused with :class:`~exportkit.errors.StateVersionError`.

Tables (``exportkit.`` omitted)::

    schema_version(version)
    instances(id, name, created_at, moved_from)          id is the advisory lock key
    meta(instance, key, value)                           checkpoint, last reconcile
    holdings(instance, sink, source_id, content_hash, remote, updated_at)
    sink_kv(instance, sink, key, value)
    dead_letters(id, instance, sink, source_id, reason, record, run_id, created_at, attempts)
    runs(seq, instance, run_id, started, finished, mode, exit_code, summary, host, pid)
    lock_holders(instance, host, pid, backend_pid, since)  who holds each instance's lock
"""

from __future__ import annotations

from typing import Any, Callable

from exportkit.errors import StateVersionError
from exportkit.migrations import SCHEMA_VERSION

__all__ = ["SCHEMA", "STEPS", "FIRST_VERSION", "LOCK_NAMESPACE", "migrate", "schema_version"]

#: the first schema version PostgreSQL state was written with
FIRST_VERSION = 2

#: first key of every exportkit advisory lock (the second is an instance id, or 0 for migrations)
LOCK_NAMESPACE = 0x45784B74  # "ExKt"

SCHEMA = """
CREATE SCHEMA IF NOT EXISTS exportkit;
CREATE TABLE exportkit.schema_version (version integer NOT NULL);
CREATE TABLE exportkit.instances (
    id serial PRIMARY KEY, name text NOT NULL UNIQUE, created_at text NOT NULL, moved_from text);
CREATE TABLE exportkit.meta (
    instance text NOT NULL, key text NOT NULL, value text NOT NULL, PRIMARY KEY (instance, key));
CREATE TABLE exportkit.holdings (
    instance text NOT NULL, sink text NOT NULL, source_id text NOT NULL, content_hash text NOT NULL, remote text,
    updated_at text NOT NULL, PRIMARY KEY (instance, sink, source_id));
CREATE TABLE exportkit.sink_kv (
    instance text NOT NULL, sink text NOT NULL, key text NOT NULL, value text NOT NULL, PRIMARY KEY (instance, sink, key));
CREATE TABLE exportkit.dead_letters (
    id bigserial PRIMARY KEY, instance text NOT NULL, sink text NOT NULL, source_id text, reason text NOT NULL,
    record text, run_id text, created_at text NOT NULL, attempts integer NOT NULL DEFAULT 1);
CREATE UNIQUE INDEX dead_letters_key ON exportkit.dead_letters (instance, sink, source_id);
CREATE TABLE exportkit.runs (
    seq bigserial, instance text NOT NULL, run_id text NOT NULL, started text NOT NULL, finished text,
    mode text NOT NULL, exit_code integer, summary text, host text, pid integer, PRIMARY KEY (instance, run_id));
CREATE INDEX runs_recent ON exportkit.runs (instance, started DESC, seq DESC);
CREATE TABLE exportkit.lock_holders (
    instance text PRIMARY KEY, host text NOT NULL, pid integer NOT NULL, backend_pid integer NOT NULL, since text NOT NULL)
"""

def _to_3(conn: Any) -> None:
    """2 -> 3: nothing to change here. SQLite rebuilt sink_kv as a rowid table (large values in a
    WITHOUT ROWID table slowed every look-up); PostgreSQL keeps large values out of line already."""


#: version -> the step that brings a PostgreSQL database from ``version - 1`` to ``version``
STEPS: dict[int, Callable[[Any], None]] = {3: _to_3}


def schema_version(conn: Any) -> int:
    """The schema version of the database behind ``conn`` (0 when it has no exportkit tables)."""
    if conn.execute("SELECT to_regclass('exportkit.schema_version')").fetchone()[0] is None:
        return 0
    row = conn.execute("SELECT max(version) FROM exportkit.schema_version").fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def migrate(conn: Any, where: str) -> int:
    """Bring the database to :data:`SCHEMA_VERSION` in one transaction; returns the version it had.

    :param conn: a psycopg connection in autocommit mode, outside a transaction.
    :param where: the database as people should read it (no password), for messages.
    :raises StateVersionError: a newer release wrote the database.
    """
    with conn.transaction():
        # One migrator at a time; the others wait here, then find the work done.
        conn.execute("SELECT pg_advisory_xact_lock(%s, 0)", (LOCK_NAMESPACE,))
        found = schema_version(conn)
        if found > SCHEMA_VERSION:
            raise StateVersionError(
                f"the exportkit state in {where} has schema version {found}, but this exportkit release understands "
                f"versions up to {SCHEMA_VERSION}: a newer release wrote it. Upgrade exportkit on this host "
                f"(every worker of a fleet runs the same release).",
                found=found,
                supported=SCHEMA_VERSION,
            )
        if found == 0:
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute("INSERT INTO exportkit.schema_version VALUES (%s)", (SCHEMA_VERSION,))
        elif found < SCHEMA_VERSION:
            for version in range(max(found, FIRST_VERSION) + 1, SCHEMA_VERSION + 1):
                STEPS[version](conn)
            conn.execute("UPDATE exportkit.schema_version SET version = %s", (SCHEMA_VERSION,))
    return found
