"""Versions of the SQLite state schema, and the forward-only migrations between them.

The version lives in SQLite's ``PRAGMA user_version``. :func:`migrate` runs
on every open, in one ``BEGIN IMMEDIATE`` transaction: a new database gets
the current schema, an older one every step from its version up to
:data:`SCHEMA_VERSION` (all or nothing: a failing step leaves the database as
it was), and a newer one is refused with :class:`~exportkit.errors.StateVersionError`
naming both versions. There are no downgrades.

Versions::

    0  a new, empty database (or one from before versions existed and empty)
    1  exportkit 0.1.0: version kept in meta('schema_version'), user_version 0
    2  version in PRAGMA user_version; meta('schema_version') dropped
    3  sink_kv an ordinary (rowid) table: a large value no longer slows every key look-up

To change the schema: add ``_to_N`` (from ``N-1``) below, add it to
:data:`STEPS`, bump :data:`SCHEMA_VERSION`, update :data:`SCHEMA` for new
databases, and keep a database written by the previous release in
``tests/fixtures`` for the migration test.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Callable

from exportkit.errors import StateVersionError

__all__ = ["SCHEMA_VERSION", "SCHEMA", "migrate", "schema_version"]

#: the schema version this release writes and understands
SCHEMA_VERSION = 3

#: the whole current schema, for a new database
SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE holdings (
    sink TEXT NOT NULL, source_id TEXT NOT NULL, content_hash TEXT NOT NULL, remote TEXT,
    updated_at TEXT NOT NULL, PRIMARY KEY (sink, source_id)) WITHOUT ROWID;
CREATE TABLE sink_kv (
    sink TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY (sink, key));
CREATE TABLE dead_letters (
    id INTEGER PRIMARY KEY, sink TEXT NOT NULL, source_id TEXT, reason TEXT NOT NULL, record TEXT,
    run_id TEXT, created_at TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 1);
CREATE UNIQUE INDEX dead_letters_key ON dead_letters (sink, source_id);
CREATE TABLE runs (
    run_id TEXT PRIMARY KEY, started TEXT NOT NULL, finished TEXT, mode TEXT NOT NULL,
    exit_code INTEGER, summary TEXT);
"""


def _to_2(conn: sqlite3.Connection) -> None:
    """1 -> 2: the version moves to PRAGMA user_version (set by :func:`migrate`); drop the old meta row."""
    conn.execute("DELETE FROM meta WHERE key = 'schema_version'")


def _to_3(conn: sqlite3.Connection) -> None:
    """2 -> 3: rebuild sink_kv as an ordinary table.

    A sink may keep one large value (a log of intents, megabytes in a big
    batch); in a WITHOUT ROWID table every key look-up that meets that row
    reads all of its overflow pages: 500 look-ups next to a 3 MB value took
    0.5 s instead of 0.6 ms, and a first run of 100,000 indicators four
    times the CPU.
    """
    conn.execute("ALTER TABLE sink_kv RENAME TO sink_kv_2")
    conn.execute("CREATE TABLE sink_kv (sink TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY (sink, key))")
    conn.execute("INSERT INTO sink_kv SELECT sink, key, value FROM sink_kv_2")
    conn.execute("DROP TABLE sink_kv_2")


#: version -> the step that brings a database from ``version - 1`` to ``version``
STEPS: dict[int, Callable[[sqlite3.Connection], None]] = {2: _to_2, 3: _to_3}


def schema_version(conn: sqlite3.Connection) -> int:
    """The schema version of an open database (0 for an empty one)."""
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if version:
        return version
    has_meta = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'").fetchone()
    if not has_meta:
        return 0
    # exportkit 0.1.0 kept the version in a meta row and left user_version at 0.
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    return int(row[0]) if row else 1


def migrate(conn: sqlite3.Connection, path: Path) -> int:
    """Bring the database to :data:`SCHEMA_VERSION` in one transaction; returns the version it had.

    :param conn: a connection in autocommit mode (``isolation_level=None``).
    :param path: the database file, for messages.
    :raises StateVersionError: the database is newer than this release.
    """
    conn.execute("BEGIN IMMEDIATE")  # one writer migrates; another opener waits, then sees the result
    try:
        found = schema_version(conn)
        if found > SCHEMA_VERSION:
            raise StateVersionError(
                f"state database {path} has schema version {found}, but this exportkit release understands "
                f"versions up to {SCHEMA_VERSION}: a newer release wrote it. Run that release (or newer), "
                f"or move the file away to start this instance's state afresh.",
                found=found,
                supported=SCHEMA_VERSION,
            )
        if found == 0:
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
        else:
            for version in range(found + 1, SCHEMA_VERSION + 1):
                STEPS[version](conn)
        if found != SCHEMA_VERSION:
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return found
