"""Instance state in SQLite: checkpoint, holdings, sink key-values, dead letters, run history.

One database per instance, ``<config dir>/<instance>.state.sqlite``, in WAL
mode, created 0600. The engine writes in transactions that cover a whole
batch (:meth:`State.transaction`), so a crash leaves the state as it was
after the last completed batch. Sinks read through :class:`Holdings` and
write through :class:`SinkStore`; both are safe to use from the sink
threads. The only writes that do not wait for a batch are the *durable*
ones (:meth:`SinkStore.set_durable`, :meth:`Holdings.put_durable`,
:meth:`Holdings.drop_durable`): each commits on its own before it returns,
for intents a sink must keep before it sends a request, and for what it
repairs when it recovers after a crash.

Tables::

    meta(key, value)                               checkpoint, last reconcile, schema version
    holdings(sink, source_id, content_hash, remote) what each sink holds
    sink_kv(sink, key, value)                      each sink's private store
    dead_letters(id, sink, source_id, reason, record, run_id, created_at, attempts)
    runs(run_id, started, finished, mode, exit_code, summary)
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator

import attrs

from exportkit.context import Holding
from exportkit.files import open_private, private_folder
from exportkit.records import format_time, id_sort_key, parse_time

__all__ = ["State", "SinkStore", "Holdings", "DeadLetter", "Checkpoint", "state_path", "SOURCE_SINK"]

SCHEMA_VERSION = 1
#: the ``sink`` value of dead letters the source produced (records that could not be normalised)
SOURCE_SINK = "(source)"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS holdings (
    sink TEXT NOT NULL, source_id TEXT NOT NULL, content_hash TEXT NOT NULL, remote TEXT,
    updated_at TEXT NOT NULL, PRIMARY KEY (sink, source_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sink_kv (
    sink TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY (sink, key));
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY, sink TEXT NOT NULL, source_id TEXT, reason TEXT NOT NULL, record TEXT,
    run_id TEXT, created_at TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 1);
CREATE UNIQUE INDEX IF NOT EXISTS dead_letters_key ON dead_letters (sink, source_id);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, started TEXT NOT NULL, finished TEXT, mode TEXT NOT NULL,
    exit_code INTEGER, summary TEXT);
"""


def _sink_kv_with_rowid(conn: sqlite3.Connection) -> None:
    """Rebuild a ``sink_kv`` made as a WITHOUT ROWID table (earlier versions) as an ordinary one.

    A sink may keep one large value (a log of intents, megabytes in a big
    batch); in a WITHOUT ROWID table every key look-up that meets that row
    reads all of its overflow pages: 500 look-ups next to a 3 MB value took
    0.5 s instead of 0.6 ms, and a first run of 100,000 indicators four
    times the CPU. Ordinary tables keep large values out of the key search.
    """
    row = conn.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'sink_kv'").fetchone()
    if row is None or "WITHOUT ROWID" not in str(row[0]).upper():
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute("ALTER TABLE sink_kv RENAME TO sink_kv_without_rowid")
        conn.execute("CREATE TABLE sink_kv (sink TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY (sink, key))")
        conn.execute("INSERT INTO sink_kv SELECT sink, key, value FROM sink_kv_without_rowid")
        conn.execute("DROP TABLE sink_kv_without_rowid")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def state_path(config_dir: Path, name: str) -> Path:
    """The state database of instance ``name``."""
    return Path(config_dir) / f"{name}.state.sqlite"


def _now() -> str:
    return format_time(datetime.now(timezone.utc)) or ""


@attrs.frozen
class Checkpoint:
    """Where the next incremental pull starts: the last record every sink confirmed."""

    updated_at: datetime
    source_id: str

    @property
    def position(self) -> tuple:
        """Comparable with :attr:`Indicator.position`."""
        return (self.updated_at, id_sort_key(self.source_id))

    def to_json(self) -> str:
        return json.dumps({"updated_at": format_time(self.updated_at), "source_id": self.source_id})

    @classmethod
    def from_json(cls, text: str) -> Checkpoint:
        data = json.loads(text)
        return cls(updated_at=parse_time(data["updated_at"]), source_id=str(data["source_id"]))  # type: ignore[arg-type]


@attrs.frozen
class DeadLetter:
    """A record a sink rejected (or the source could not normalise), with the reason."""

    id: int
    sink: str
    source_id: str | None
    reason: str
    record: Any
    run_id: str | None
    created_at: str
    attempts: int


class State:
    """An open instance state database. Use :meth:`open`; close with :meth:`close`."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self._conn = conn
        self._lock = threading.RLock()
        self.path = path

    @classmethod
    def open(cls, path: Path) -> State:
        """Open (creating with mode 0600 if needed) the state database at ``path``."""
        path = Path(path)
        private_folder(path.parent, "config folder")
        # Created (or checked) without following a link; SQLite gives its -wal and
        # -shm files the database file's mode.
        os.close(open_private(path, os.O_RDWR | os.O_CREAT, what="the state database"))
        # isolation_level=None: transactions are explicit (BEGIN/COMMIT in transaction()).
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.executescript(_SCHEMA)
        _sink_kv_with_rowid(conn)
        conn.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        for suffix in ("-wal", "-shm"):
            side = Path(str(path) + suffix)
            if side.exists():
                os.chmod(side, 0o600)
        return cls(conn, path)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> State:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Group writes into one commit; rolled back if the block raises. Nests (inner blocks join the outer)."""
        with self._lock:
            if self._conn.in_transaction:
                yield
                return
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def _execute(self, sql: str, params: Iterable[Any] = ()) -> sqlite3.Cursor:
        with self._lock:
            return self._conn.execute(sql, tuple(params))

    # --- meta ---------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        row = self._execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str | None) -> None:
        if value is None:
            self._execute("DELETE FROM meta WHERE key = ?", (key,))
        else:
            self._execute("INSERT INTO meta VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value", (key, value))

    @property
    def checkpoint(self) -> Checkpoint | None:
        """The incremental checkpoint, or ``None`` before the first complete run."""
        text = self.get_meta("checkpoint")
        return Checkpoint.from_json(text) if text else None

    def set_checkpoint(self, checkpoint: Checkpoint | None) -> None:
        self.set_meta("checkpoint", checkpoint.to_json() if checkpoint else None)

    @property
    def last_reconcile(self) -> datetime | None:
        return parse_time(self.get_meta("last_reconcile"))

    def set_last_reconcile(self, when: datetime) -> None:
        self.set_meta("last_reconcile", format_time(when))

    # --- holdings -----------------------------------------------------------------

    def holdings(self, sink: str) -> Holdings:
        """Read access to what ``sink`` holds."""
        return Holdings(self, sink)

    def put_holdings(self, sink: str, rows: Iterable[tuple[str, str, Any]]) -> None:
        """Remember ``(source_id, content_hash, remote)`` rows for ``sink``."""
        now = _now()
        with self._lock:
            self._conn.executemany(
                "INSERT INTO holdings VALUES (?, ?, ?, ?, ?) ON CONFLICT(sink, source_id) DO UPDATE SET "
                "content_hash = excluded.content_hash, remote = excluded.remote, updated_at = excluded.updated_at",
                [(sink, sid, h, json.dumps(remote) if remote is not None else None, now) for sid, h, remote in rows],
            )

    def drop_holdings(self, sink: str, source_ids: Iterable[str]) -> None:
        with self._lock:
            self._conn.executemany("DELETE FROM holdings WHERE sink = ? AND source_id = ?", [(sink, s) for s in source_ids])

    def held_ids(self, sink: str) -> set[str]:
        """Every source id ``sink`` holds."""
        return {row[0] for row in self._execute("SELECT source_id FROM holdings WHERE sink = ?", (sink,))}

    def holds_any(self, sink: str) -> bool:
        """Whether ``sink`` holds anything (one indexed look-up, whatever the size)."""
        return self._execute("SELECT 1 FROM holdings WHERE sink = ? LIMIT 1", (sink,)).fetchone() is not None

    def count_holdings(self) -> dict[str, int]:
        return dict(self._execute("SELECT sink, COUNT(*) FROM holdings GROUP BY sink").fetchall())

    # --- sink key-value -----------------------------------------------------------

    def store(self, sink: str) -> SinkStore:
        """The private key-value store of ``sink``."""
        return SinkStore(self, sink)

    # --- dead letters -------------------------------------------------------------

    def add_dead_letters(self, sink: str, rows: Iterable[tuple[str | None, str, Any]], run_id: str) -> int:
        """Dead-letter ``(source_id, reason, record)`` rows; a record already there is updated.

        :returns: how many rows are new (not already dead-lettered for this sink).
        """
        now = _now()
        count = 0
        with self._lock:
            for source_id, reason, record in rows:
                payload = json.dumps(record, ensure_ascii=False, default=str) if record is not None else None
                if source_id is None:
                    # No id to key on: the same payload dead-lettered again only counts an attempt.
                    existing = self._conn.execute(
                        "SELECT id FROM dead_letters WHERE sink = ? AND source_id IS NULL AND record IS ?", (sink, payload)
                    ).fetchone()
                    if existing:
                        self._conn.execute(
                            "UPDATE dead_letters SET attempts = attempts + 1, run_id = ?, reason = ? WHERE id = ?",
                            (run_id, reason, existing[0]),
                        )
                        continue
                    self._conn.execute(
                        "INSERT INTO dead_letters (sink, source_id, reason, record, run_id, created_at) VALUES (?, NULL, ?, ?, ?, ?)",
                        (sink, reason, payload, run_id, now),
                    )
                    count += 1
                else:
                    known = self._conn.execute(
                        "SELECT 1 FROM dead_letters WHERE sink = ? AND source_id = ?", (sink, source_id)
                    ).fetchone()
                    count += 0 if known else 1
                    self._conn.execute(
                        "INSERT INTO dead_letters (sink, source_id, reason, record, run_id, created_at) VALUES (?, ?, ?, ?, ?, ?) "
                        "ON CONFLICT(sink, source_id) DO UPDATE SET reason = excluded.reason, record = excluded.record, "
                        "run_id = excluded.run_id, created_at = excluded.created_at, attempts = attempts + 1",
                        (sink, source_id, reason, payload, run_id, now),
                    )
        return count

    def dead_letters(self, sink: str | None = None, limit: int | None = None) -> list[DeadLetter]:
        sql = "SELECT id, sink, source_id, reason, record, run_id, created_at, attempts FROM dead_letters"
        params: list[Any] = []
        if sink is not None:
            sql += " WHERE sink = ?"
            params.append(sink)
        sql += " ORDER BY id"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        return [
            DeadLetter(r[0], r[1], r[2], r[3], json.loads(r[4]) if r[4] else None, r[5], r[6], r[7])
            for r in self._execute(sql, params).fetchall()
        ]

    def remove_dead_letters(self, ids: Iterable[int]) -> None:
        with self._lock:
            self._conn.executemany("DELETE FROM dead_letters WHERE id = ?", [(i,) for i in ids])

    def clear_dead_letter(self, sink: str, source_ids: Iterable[str]) -> None:
        """Forget dead letters of ``sink`` for records it has since accepted."""
        with self._lock:
            self._conn.executemany("DELETE FROM dead_letters WHERE sink = ? AND source_id = ?", [(sink, s) for s in source_ids])

    def count_dead_letters(self) -> dict[str, int]:
        return dict(self._execute("SELECT sink, COUNT(*) FROM dead_letters GROUP BY sink").fetchall())

    # --- runs ---------------------------------------------------------------------

    def start_run(self, run_id: str, mode: str) -> None:
        self._execute("INSERT INTO runs (run_id, started, mode) VALUES (?, ?, ?)", (run_id, _now(), mode))

    def finish_run(self, run_id: str, exit_code: int, summary: dict[str, Any]) -> None:
        self._execute(
            "UPDATE runs SET finished = ?, exit_code = ?, summary = ? WHERE run_id = ?",
            (_now(), exit_code, json.dumps(summary, default=str), run_id),
        )

    def runs(self, limit: int = 10) -> list[dict[str, Any]]:
        rows = self._execute(
            "SELECT run_id, started, finished, mode, exit_code, summary FROM runs ORDER BY started DESC, rowid DESC LIMIT ?", (limit,)
        ).fetchall()
        return [
            {"run_id": r[0], "started": r[1], "finished": r[2], "mode": r[3], "exit_code": r[4], "summary": json.loads(r[5]) if r[5] else None}
            for r in rows
        ]

    # --- reset --------------------------------------------------------------------

    def reset(self, *, sink: str | None = None, checkpoint_only: bool = False) -> None:
        """Forget state: the checkpoint only, one sink's holdings and store, or everything but run history."""
        with self.transaction():
            if checkpoint_only:
                self.set_checkpoint(None)
                return
            if sink is not None:
                self._execute("DELETE FROM holdings WHERE sink = ?", (sink,))
                self._execute("DELETE FROM sink_kv WHERE sink = ?", (sink,))
                # The checkpoint moved past records this sink held; without its holdings
                # they must be offered again, so the next run starts from the beginning.
                self.set_checkpoint(None)
                return
            for table in ("holdings", "sink_kv", "dead_letters"):
                self._execute(f"DELETE FROM {table}")
            self.set_checkpoint(None)
            self.set_meta("last_reconcile", None)


class Holdings:
    """What one sink holds; implements :class:`exportkit.context.HoldingsView`.

    The engine reads a whole batch's holdings in one query (:meth:`preloaded`)
    before handing the batch to the sink, so the sink's per-record
    :meth:`get` calls are answered from memory instead of one query each.
    """

    def __init__(self, state: State, sink: str) -> None:
        self._state = state
        self.sink = sink
        self._preloaded: dict[str, Holding | None] | None = None

    @contextmanager
    def preloaded(self, source_ids: Iterable[str]) -> Iterator[dict[str, Holding]]:
        """Read the holdings of ``source_ids`` in one query; inside the block, :meth:`get` answers them from memory.

        Yields the holdings found (absent ids left out). Writes made inside the
        block are not seen by :meth:`get` for these ids: the block covers one
        batch, whose holdings the engine writes only after the sink answered.
        """
        ids = list(source_ids)
        held = self.get_many(ids)
        self._preloaded = {sid: held.get(sid) for sid in ids}
        try:
            yield held
        finally:
            self._preloaded = None

    def get(self, source_id: str) -> Holding | None:
        preloaded = self._preloaded
        if preloaded is not None and source_id in preloaded:
            return preloaded[source_id]
        row = self._state._execute(
            "SELECT content_hash, remote FROM holdings WHERE sink = ? AND source_id = ?", (self.sink, source_id)
        ).fetchone()
        return Holding(row[0], json.loads(row[1]) if row[1] else None) if row else None

    def items(self) -> Iterator[tuple[str, Holding]]:
        """Every holding of the sink (read in one query)."""
        rows = self._state._execute("SELECT source_id, content_hash, remote FROM holdings WHERE sink = ?", (self.sink,)).fetchall()
        for sid, content_hash, remote in rows:
            yield sid, Holding(content_hash, json.loads(remote) if remote else None)

    def put_durable(self, source_id: str, content_hash: str, remote: Any) -> None:
        """Remember one holding and commit it now (see :class:`exportkit.context.HoldingsView`)."""
        with self._state.transaction():
            self._state.put_holdings(self.sink, [(source_id, content_hash, remote)])

    def drop_durable(self, source_id: str) -> None:
        """Forget one holding and commit it now."""
        with self._state.transaction():
            self._state.drop_holdings(self.sink, [source_id])

    def get_many(self, source_ids: Iterable[str]) -> dict[str, Holding]:
        ids = list(source_ids)
        out: dict[str, Holding] = {}
        for start in range(0, len(ids), 500):  # stay under SQLite's parameter limit
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._state._execute(
                f"SELECT source_id, content_hash, remote FROM holdings WHERE sink = ? AND source_id IN ({marks})",
                [self.sink, *chunk],
            ).fetchall()
            for sid, content_hash, remote in rows:
                out[sid] = Holding(content_hash, json.loads(remote) if remote else None)
        return out

    def count(self) -> int:
        row = self._state._execute("SELECT COUNT(*) FROM holdings WHERE sink = ?", (self.sink,)).fetchone()
        return int(row[0])


class SinkStore:
    """One sink's private key-value store; implements :class:`exportkit.context.KeyValueStore`."""

    def __init__(self, state: State, sink: str) -> None:
        self._state = state
        self.sink = sink

    def get(self, key: str, default: Any = None) -> Any:
        row = self._state._execute("SELECT value FROM sink_kv WHERE sink = ? AND key = ?", (self.sink, key)).fetchone()
        return json.loads(row[0]) if row else default

    def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        """Values of several keys, one query per 500 keys; absent keys are left out."""
        wanted = list(keys)
        out: dict[str, Any] = {}
        for start in range(0, len(wanted), 500):  # stay under SQLite's parameter limit
            chunk = wanted[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._state._execute(f"SELECT key, value FROM sink_kv WHERE sink = ? AND key IN ({marks})", [self.sink, *chunk]).fetchall()
            out.update((key, json.loads(value)) for key, value in rows)
        return out

    def set(self, key: str, value: Any) -> None:
        self._state._execute(
            "INSERT INTO sink_kv VALUES (?, ?, ?) ON CONFLICT(sink, key) DO UPDATE SET value = excluded.value",
            (self.sink, key, json.dumps(value)),
        )

    def delete(self, key: str) -> None:
        self._state._execute("DELETE FROM sink_kv WHERE sink = ? AND key = ?", (self.sink, key))

    def set_durable(self, key: str, value: Any) -> None:
        """Store and commit now, in a transaction of its own (waits while another thread's batch commits)."""
        with self._state.transaction():
            self.set(key, value)


class DryRunStore:
    """A sink store for dry runs: reads the real store, keeps writes in memory only."""

    def __init__(self, real: SinkStore) -> None:
        self._real = real
        self._local: dict[str, Any] = {}
        self._deleted: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:
        if key in self._local:
            return self._local[key]
        if key in self._deleted:
            return default
        return self._real.get(key, default)

    def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        wanted = list(keys)
        out = {k: v for k, v in self._real.get_many(k for k in wanted if k not in self._local and k not in self._deleted).items()}
        out.update((k, self._local[k]) for k in wanted if k in self._local)
        return out

    def set(self, key: str, value: Any) -> None:
        self._local[key] = value
        self._deleted.discard(key)

    def delete(self, key: str) -> None:
        self._local.pop(key, None)
        self._deleted.add(key)

    def set_durable(self, key: str, value: Any) -> None:
        self.set(key, value)
