"""``exportkit state migrate``: move one instance's SQLite state into PostgreSQL, verified.

Everything moves: the checkpoint and other meta values, what each sink
holds (with its remote ids), each sink's private store, the dead letters and
the run history. The copy is one PostgreSQL transaction that commits only
when the row counts of every table match the SQLite file's, so a failed move
leaves PostgreSQL as it was. Both locks are held meanwhile (the ``flock``
beside the config and the PostgreSQL advisory lock), so no run of the
instance writes on either side during the move.

Afterwards the SQLite file is kept as a backup and marked as moved
(:data:`exportkit.statelocation.MOVED_TO_KEY`), so a host whose config still
points at SQLite refuses to run the instance instead of starting over.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import attrs

from exportkit.fleet.host import host_name
from exportkit.errors import ExportkitError
from exportkit.lock import InstanceLock, lock_path
from exportkit.migrations import SCHEMA_VERSION
from exportkit.postgres.connect import connect, display_url
from exportkit.postgres.lock import AdvisoryLock
from exportkit.postgres.state import PgState
from exportkit.records import format_time
from exportkit.state import State, state_path
from exportkit.statelocation import MOVED_TO_KEY

__all__ = ["MoveResult", "move_to_postgres", "TABLES"]

#: table -> its columns in the SQLite schema (version :data:`SCHEMA_VERSION`), in PostgreSQL's order after ``instance``
TABLES: dict[str, tuple[str, ...]] = {
    "meta": ("key", "value"),
    "holdings": ("sink", "source_id", "content_hash", "remote", "updated_at"),
    "sink_kv": ("sink", "key", "value"),
    "dead_letters": ("sink", "source_id", "reason", "record", "run_id", "created_at", "attempts"),
    "runs": ("run_id", "started", "finished", "mode", "exit_code", "summary"),
}


@attrs.frozen
class MoveResult:
    """What a move copied: rows per table (the same on both sides, or it did not commit)."""

    instance: str
    source: Path
    target: str
    counts: dict[str, int]


def move_to_postgres(config_dir: Path, name: str, url: str) -> MoveResult:
    """Copy instance ``name``'s SQLite state into the PostgreSQL database ``url`` and verify the counts.

    :raises ExportkitError: no SQLite state, it was moved already, PostgreSQL already holds
        state for the instance, the instance is running (:class:`~exportkit.errors.LockedError`),
        or the counts do not match (nothing is committed then).
    """
    local = state_path(config_dir, name)
    where = display_url(url)
    if not local.exists():
        raise ExportkitError(f"instance {name!r} has no SQLite state to move ({local} does not exist)")
    with InstanceLock(lock_path(config_dir, name), name), AdvisoryLock(url, name):
        with State.open(local) as source:  # migrates an older file to the current schema first
            moved = source.get_meta(MOVED_TO_KEY)
            if moved:
                raise ExportkitError(f"the state of instance {name!r} was moved already ({moved})")
            with PgState.open(url, name) as target:
                if target.has_state():
                    raise ExportkitError(
                        f"{where} already holds state for instance {name!r}; refusing to mix two histories "
                        f"(remove it there first if the SQLite file is the one to keep)"
                    )
            counts = _copy(local, name, url, where)
            source.set_meta(MOVED_TO_KEY, f"{where} on {format_time(datetime.now(timezone.utc))}")
    return MoveResult(name, local, where, counts)


def _copy(local: Path, name: str, url: str, where: str) -> dict[str, int]:
    rows = _read_sqlite(local)
    conn = connect(url, purpose=f"move {name}")
    try:
        with conn.transaction():
            for table, columns in TABLES.items():
                data = [r for r in rows[table] if not (table == "meta" and r[0] == MOVED_TO_KEY)]
                rows[table] = data
                if not data:
                    continue
                names = ", ".join(("instance", *columns))
                marks = ", ".join(["%s"] * (len(columns) + 1))
                with conn.cursor() as cur:
                    cur.executemany(f"INSERT INTO exportkit.{table} ({names}) VALUES ({marks})", [(name, *r) for r in data])
            # The runs happened on this host; say so in the fleet's history.
            conn.execute("UPDATE exportkit.runs SET host = %s WHERE instance = %s AND host IS NULL", (host_name(), name))
            conn.execute(
                "UPDATE exportkit.instances SET moved_from = %s WHERE name = %s", (f"{host_name()}:{local}", name)
            )
            counts = {}
            for table in TABLES:
                found = int(conn.execute(f"SELECT COUNT(*) FROM exportkit.{table} WHERE instance = %s", (name,)).fetchone()[0])
                if found != len(rows[table]):
                    raise ExportkitError(
                        f"moving {name!r} to {where}: {table} has {found} rows there but {len(rows[table])} in {local}; "
                        "nothing was committed"
                    )
                counts[table] = found
    finally:
        conn.close()
    return counts


def _read_sqlite(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every state table, read in one snapshot."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        if version != SCHEMA_VERSION:
            raise ExportkitError(f"{path} has schema version {version}; this release moves version {SCHEMA_VERSION} only")
        conn.execute("BEGIN")
        order = {"dead_letters": " ORDER BY id", "runs": " ORDER BY rowid"}
        return {
            table: [tuple(r) for r in conn.execute(f"SELECT {', '.join(columns)} FROM {table}{order.get(table, '')}")]
            for table, columns in TABLES.items()
        }
    finally:
        conn.close()
