"""Instance state in SQLite: checkpoint, holdings, sink key-values, dead letters, run history.

One database per instance, ``<config dir>/<instance>.state.sqlite``, in WAL
mode, created 0600, its schema version in ``PRAGMA user_version`` (older
databases are migrated on open, newer ones refused: :mod:`exportkit.migrations`).
The engine writes holdings, dead letters, the checkpoint and the sink
stores' pending writes in transactions that cover a whole batch
(:meth:`State.transaction`), so a crash leaves them as they were after the
last completed batch. Sinks read through :class:`Holdings` and write their
private key-values through :class:`~exportkit.sinkstore.SinkStore`, from
their own threads: ``set``/``delete`` wait for the batch,
``set_durable`` commits at once (see :mod:`exportkit.sinkstore`).
The durable writes (:meth:`SinkStore.set_durable`, :meth:`Holdings.put_durable`,
:meth:`Holdings.drop_durable`) each commit on their own before they return,
for intents a sink must keep before it sends a request, and for what it
repairs when it recovers after a crash.

Tables::

    meta(key, value)                               checkpoint, last reconcile
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
from typing import Any, Iterable, Iterator, Mapping

import attrs

from exportkit import storedjson
from exportkit.context import Holding
from exportkit.files import open_private, private_folder
from exportkit.migrations import SCHEMA_VERSION, migrate
from exportkit.sinkstore import DryRunStore, SinkStore
from exportkit.records import format_time, id_sort_key, parse_time

__all__ = ["State", "SinkStore", "DryRunStore", "Holdings", "DeadLetter", "Checkpoint", "state_path", "SOURCE_SINK", "SCHEMA_VERSION"]

#: the ``sink`` value of dead letters the source produced (records that could not be normalised)
SOURCE_SINK = "(source)"


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
    def position(self) -> tuple[datetime, tuple[int, int, str]]:
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
        self._stores: dict[str, SinkStore] = {}
        self.path = path

    @classmethod
    def open(cls, path: Path) -> State:
        """Open (creating with mode 0600 if needed) the state database at ``path``.

        Migrates an older schema to :data:`~exportkit.migrations.SCHEMA_VERSION`
        first (:func:`exportkit.migrations.migrate`).

        :raises StateVersionError: a newer release wrote the database.
        """
        path = Path(path)
        private_folder(path.parent, "config folder")
        # Created (or checked) without following a link; SQLite gives its -wal and
        # -shm files the database file's mode.
        os.close(open_private(path, os.O_RDWR | os.O_CREAT, what="the state database"))
        # isolation_level=None: transactions are explicit (BEGIN/COMMIT in transaction()).
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            migrate(conn, path)  # forward-only, one transaction; refuses a newer schema
        except BaseException:
            conn.close()
            raise
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
                [(sink, sid, h, storedjson.dumps(remote) if remote is not None else None, now) for sid, h, remote in rows],
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
        """The private key-value store of ``sink`` (one object per sink, so pending writes are found)."""
        with self._lock:
            if sink not in self._stores:
                self._stores[sink] = SinkStore(self, sink)
            return self._stores[sink]

    def flush_sink_stores(self) -> None:
        """Write every sink store's pending ``set``/``delete`` calls (inside the batch's :meth:`transaction`)."""
        with self._lock:
            stores = list(self._stores.values())
        for store in stores:
            store.flush()

    def discard_sink_stores(self) -> None:
        """Drop every sink store's pending writes (their batch was never committed)."""
        with self._lock:
            stores = list(self._stores.values())
        for store in stores:
            store.discard()

    def read_kv(self, sink: str, key: str) -> str | None:
        """The stored JSON text of ``sink``'s ``key``, or ``None``."""
        row = self._execute("SELECT value FROM sink_kv WHERE sink = ? AND key = ?", (sink, key)).fetchone()
        return str(row[0]) if row else None

    def read_kv_many(self, sink: str, keys: Iterable[str]) -> dict[str, str]:
        """The stored JSON texts of several of ``sink``'s keys, one query per 500 keys; absent keys are left out."""
        wanted = list(keys)
        out: dict[str, str] = {}
        for start in range(0, len(wanted), 500):  # stay under SQLite's parameter limit
            chunk = wanted[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._execute(f"SELECT key, value FROM sink_kv WHERE sink = ? AND key IN ({marks})", [sink, *chunk]).fetchall()
            out.update((str(key), str(value)) for key, value in rows)
        return out

    def write_kv(self, sink: str, values: Mapping[str, str | None]) -> None:
        """Store JSON texts for ``sink`` (``None`` deletes the key); commits only with the caller's transaction."""
        with self._lock:
            for key, text in values.items():
                if text is None:
                    self._conn.execute("DELETE FROM sink_kv WHERE sink = ? AND key = ?", (sink, key))
                else:
                    self._conn.execute(
                        "INSERT INTO sink_kv VALUES (?, ?, ?) ON CONFLICT(sink, key) DO UPDATE SET value = excluded.value",
                        (sink, key, text),
                    )

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
        return Holding(row[0], storedjson.loads(row[1]) if row[1] else None) if row else None

    def items(self) -> Iterator[tuple[str, Holding]]:
        """Every holding of the sink (read in one query)."""
        rows = self._state._execute("SELECT source_id, content_hash, remote FROM holdings WHERE sink = ?", (self.sink,)).fetchall()
        for sid, content_hash, remote in rows:
            yield sid, Holding(content_hash, storedjson.loads(remote) if remote else None)

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
                out[sid] = Holding(content_hash, storedjson.loads(remote) if remote else None)
        return out

    def count(self) -> int:
        row = self._state._execute("SELECT COUNT(*) FROM holdings WHERE sink = ?", (self.sink,)).fetchone()
        return int(row[0])
