"""Instance state in PostgreSQL: the :class:`~exportkit.statestore.StateStore` of a fleet.

The same operations, with the same meaning, as the SQLite backend
(:class:`exportkit.state.State`); only the storage differs: one database for
every instance, each row keyed by instance name (:mod:`exportkit.postgres.schema`).
One connection per open state, in autocommit mode outside
:meth:`PgState.transaction`; sink threads share it behind a lock, as they
share the SQLite connection, so a batch's writes commit together.

The run history also records the host and pid of each run, for
``exportkit fleet status``.
"""

from __future__ import annotations

import json
import os
import threading
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Mapping, cast

from exportkit import storedjson
from exportkit.fleet.host import host_name
from exportkit.context import Holding
from exportkit.postgres.connect import connect, display_url, translate_errors
from exportkit.postgres.schema import migrate
from exportkit.records import format_time, parse_time
from exportkit.sinkstore import SinkStore

if TYPE_CHECKING:
    import psycopg

    from exportkit.state import Checkpoint, DeadLetter, State

__all__ = ["PgState", "PgHoldings", "ensure_instance", "instance_has_state"]


def _now() -> str:
    return format_time(datetime.now(timezone.utc)) or ""


def ensure_instance(conn: Any, instance: str) -> int:
    """The id of ``instance`` in ``exportkit.instances`` (registering it if new): its advisory lock key."""
    conn.execute(
        "INSERT INTO exportkit.instances (name, created_at) VALUES (%s, %s) ON CONFLICT (name) DO NOTHING", (instance, _now())
    )
    return int(conn.execute("SELECT id FROM exportkit.instances WHERE name = %s", (instance,)).fetchone()[0])


def instance_has_state(conn: Any, instance: str) -> bool:
    """True when the database holds anything for ``instance`` (a checkpoint, holdings, dead letters or runs)."""
    for table in ("meta", "holdings", "dead_letters", "runs", "sink_kv"):
        if conn.execute(f"SELECT 1 FROM exportkit.{table} WHERE instance = %s LIMIT 1", (instance,)).fetchone():
            return True
    return False


class PgState:
    """The state of one instance in PostgreSQL. Use :meth:`open`; close with :meth:`close`."""

    def __init__(self, conn: psycopg.Connection[Any], url: str, instance: str) -> None:
        self._conn = conn
        self._lock = threading.RLock()
        self._in_transaction = False
        self._stores: dict[str, SinkStore] = {}
        self.instance = instance
        #: the database without its password, for messages
        self.where = display_url(url)

    @classmethod
    def open(cls, url: str, instance: str) -> PgState:
        """Connect, migrate the schema when it is older, and register ``instance``.

        :raises StateVersionError: a newer release wrote the database.
        :raises ExportkitError: the server cannot be reached or refuses the login (no password in the message).
        """
        conn = connect(url, purpose=f"state {instance}", application_name=f"exportkit state {instance}")
        try:
            migrate(conn, display_url(url))
            ensure_instance(conn, instance)
        except BaseException:
            conn.close()
            raise
        return cls(conn, url, instance)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def has_state(self) -> bool:
        """True when the database holds anything for this instance (a checkpoint, holdings, dead letters, runs)."""
        with self._lock:
            return instance_has_state(self._conn, self.instance)

    def __enter__(self) -> PgState:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Group writes into one commit; rolled back if the block raises. Nests (inner blocks join the outer)."""
        with self._lock:
            if self._in_transaction:
                yield
                return
            self._in_transaction = True
            try:
                with translate_errors(self.where), self._conn.transaction():
                    yield
            finally:
                self._in_transaction = False

    def _execute(self, sql: str, params: Iterable[Any] = ()) -> Any:
        with self._lock, translate_errors(self.where):
            return self._conn.execute(sql, tuple(params))

    def _executemany(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        if rows:
            with self._lock, translate_errors(self.where), self._conn.cursor() as cur:
                cur.executemany(sql, rows)

    # --- meta ---------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        row = self._execute("SELECT value FROM exportkit.meta WHERE instance = %s AND key = %s", (self.instance, key)).fetchone()
        return str(row[0]) if row else None

    def set_meta(self, key: str, value: str | None) -> None:
        if value is None:
            self._execute("DELETE FROM exportkit.meta WHERE instance = %s AND key = %s", (self.instance, key))
        else:
            self._execute(
                "INSERT INTO exportkit.meta VALUES (%s, %s, %s) ON CONFLICT (instance, key) DO UPDATE SET value = excluded.value",
                (self.instance, key, value),
            )

    @property
    def checkpoint(self) -> Checkpoint | None:
        """The incremental checkpoint, or ``None`` before the first complete run."""
        from exportkit.state import Checkpoint

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

    def holdings(self, sink: str) -> PgHoldings:
        """Read access to what ``sink`` holds."""
        return PgHoldings(self, sink)

    def put_holdings(self, sink: str, rows: Iterable[tuple[str, str, Any]]) -> None:
        """Remember ``(source_id, content_hash, remote)`` rows for ``sink``."""
        now = _now()
        self._executemany(
            "INSERT INTO exportkit.holdings VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (instance, sink, source_id) DO UPDATE SET "
            "content_hash = excluded.content_hash, remote = excluded.remote, updated_at = excluded.updated_at",
            [(self.instance, sink, sid, h, storedjson.dumps(remote) if remote is not None else None, now) for sid, h, remote in rows],
        )

    def drop_holdings(self, sink: str, source_ids: Iterable[str]) -> None:
        ids = list(source_ids)
        if ids:
            self._execute(
                "DELETE FROM exportkit.holdings WHERE instance = %s AND sink = %s AND source_id = ANY(%s)", (self.instance, sink, ids)
            )

    def held_ids(self, sink: str) -> set[str]:
        """Every source id ``sink`` holds."""
        rows = self._execute("SELECT source_id FROM exportkit.holdings WHERE instance = %s AND sink = %s", (self.instance, sink))
        return {row[0] for row in rows.fetchall()}

    def holds_any(self, sink: str) -> bool:
        """Whether ``sink`` holds anything (one indexed look-up, whatever the size)."""
        row = self._execute("SELECT 1 FROM exportkit.holdings WHERE instance = %s AND sink = %s LIMIT 1", (self.instance, sink))
        return row.fetchone() is not None

    def count_holdings(self) -> dict[str, int]:
        rows = self._execute("SELECT sink, COUNT(*) FROM exportkit.holdings WHERE instance = %s GROUP BY sink", (self.instance,))
        return {sink: int(count) for sink, count in rows.fetchall()}

    # --- sink key-value -----------------------------------------------------------

    def store(self, sink: str) -> SinkStore:
        """The private key-value store of ``sink`` (one object per sink, so pending writes are found)."""
        with self._lock:
            if sink not in self._stores:
                # SinkStore needs only transaction(), read_kv() and write_kv(), which this class has too.
                self._stores[sink] = SinkStore(cast("State", self), sink)
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
        row = self._execute(
            "SELECT value FROM exportkit.sink_kv WHERE instance = %s AND sink = %s AND key = %s", (self.instance, sink, key)
        ).fetchone()
        return str(row[0]) if row else None

    def read_kv_many(self, sink: str, keys: Iterable[str]) -> dict[str, str]:
        """The stored JSON texts of several of ``sink``'s keys in one query; absent keys are left out."""
        wanted = list(keys)
        if not wanted:
            return {}
        rows = self._execute(
            "SELECT key, value FROM exportkit.sink_kv WHERE instance = %s AND sink = %s AND key = ANY(%s)", (self.instance, sink, wanted)
        ).fetchall()
        return {str(key): str(value) for key, value in rows}

    def write_kv(self, sink: str, values: Mapping[str, str | None]) -> None:
        """Store JSON texts for ``sink`` (``None`` deletes the key); commits only with the caller's transaction."""
        with self._lock, translate_errors(self.where):
            for key, text in values.items():
                if text is None:
                    self._conn.execute(
                        "DELETE FROM exportkit.sink_kv WHERE instance = %s AND sink = %s AND key = %s", (self.instance, sink, key)
                    )
                else:
                    self._conn.execute(
                        "INSERT INTO exportkit.sink_kv VALUES (%s, %s, %s, %s) "
                        "ON CONFLICT (instance, sink, key) DO UPDATE SET value = excluded.value",
                        (self.instance, sink, key, text),
                    )

    # --- dead letters -------------------------------------------------------------

    def add_dead_letters(self, sink: str, rows: Iterable[tuple[str | None, str, Any]], run_id: str) -> int:
        """Dead-letter ``(source_id, reason, record)`` rows; a record already there is updated.

        :returns: how many rows are new (not already dead-lettered for this sink).
        """
        now = _now()
        count = 0
        with self.transaction(), translate_errors(self.where):
            for source_id, reason, record in rows:
                payload = json.dumps(record, ensure_ascii=False, default=str) if record is not None else None
                if source_id is None:
                    # No id to key on: the same payload dead-lettered again only counts an attempt.
                    existing = self._conn.execute(
                        "SELECT id FROM exportkit.dead_letters WHERE instance = %s AND sink = %s AND source_id IS NULL "
                        "AND record IS NOT DISTINCT FROM %s",
                        (self.instance, sink, payload),
                    ).fetchone()
                    if existing:
                        self._conn.execute(
                            "UPDATE exportkit.dead_letters SET attempts = attempts + 1, run_id = %s, reason = %s WHERE id = %s",
                            (run_id, reason, existing[0]),
                        )
                        continue
                    self._conn.execute(
                        "INSERT INTO exportkit.dead_letters (instance, sink, source_id, reason, record, run_id, created_at) "
                        "VALUES (%s, %s, NULL, %s, %s, %s, %s)",
                        (self.instance, sink, reason, payload, run_id, now),
                    )
                    count += 1
                else:
                    known = self._conn.execute(
                        "SELECT 1 FROM exportkit.dead_letters WHERE instance = %s AND sink = %s AND source_id = %s",
                        (self.instance, sink, source_id),
                    ).fetchone()
                    count += 0 if known else 1
                    self._conn.execute(
                        "INSERT INTO exportkit.dead_letters (instance, sink, source_id, reason, record, run_id, created_at) "
                        "VALUES (%s, %s, %s, %s, %s, %s, %s) "
                        "ON CONFLICT (instance, sink, source_id) DO UPDATE SET reason = excluded.reason, record = excluded.record, "
                        "run_id = excluded.run_id, created_at = excluded.created_at, attempts = exportkit.dead_letters.attempts + 1",
                        (self.instance, sink, source_id, reason, payload, run_id, now),
                    )
        return count

    def dead_letters(self, sink: str | None = None, limit: int | None = None) -> list[DeadLetter]:
        from exportkit.state import DeadLetter

        sql = "SELECT id, sink, source_id, reason, record, run_id, created_at, attempts FROM exportkit.dead_letters WHERE instance = %s"
        params: list[Any] = [self.instance]
        if sink is not None:
            sql += " AND sink = %s"
            params.append(sink)
        sql += " ORDER BY id"
        if limit is not None:
            sql += " LIMIT %s"
            params.append(limit)
        return [
            DeadLetter(int(r[0]), r[1], r[2], r[3], json.loads(r[4]) if r[4] else None, r[5], r[6], int(r[7]))
            for r in self._execute(sql, params).fetchall()
        ]

    def remove_dead_letters(self, ids: Iterable[int]) -> None:
        wanted = [int(i) for i in ids]
        if wanted:
            self._execute("DELETE FROM exportkit.dead_letters WHERE instance = %s AND id = ANY(%s)", (self.instance, wanted))

    def clear_dead_letter(self, sink: str, source_ids: Iterable[str]) -> None:
        """Forget dead letters of ``sink`` for records it has since accepted."""
        ids = list(source_ids)
        if ids:
            self._execute(
                "DELETE FROM exportkit.dead_letters WHERE instance = %s AND sink = %s AND source_id = ANY(%s)", (self.instance, sink, ids)
            )

    def count_dead_letters(self) -> dict[str, int]:
        rows = self._execute("SELECT sink, COUNT(*) FROM exportkit.dead_letters WHERE instance = %s GROUP BY sink", (self.instance,))
        return {sink: int(count) for sink, count in rows.fetchall()}

    # --- runs ---------------------------------------------------------------------

    def start_run(self, run_id: str, mode: str) -> None:
        self._execute(
            "INSERT INTO exportkit.runs (instance, run_id, started, mode, host, pid) VALUES (%s, %s, %s, %s, %s, %s)",
            (self.instance, run_id, _now(), mode, host_name(), os.getpid()),
        )

    def finish_run(self, run_id: str, exit_code: int, summary: dict[str, Any]) -> None:
        self._execute(
            "UPDATE exportkit.runs SET finished = %s, exit_code = %s, summary = %s WHERE instance = %s AND run_id = %s",
            (_now(), exit_code, json.dumps(summary, default=str), self.instance, run_id),
        )

    def runs(self, limit: int = 10) -> list[dict[str, Any]]:
        rows = self._execute(
            "SELECT run_id, started, finished, mode, exit_code, summary, host, pid FROM exportkit.runs WHERE instance = %s "
            "ORDER BY started DESC, seq DESC LIMIT %s",
            (self.instance, limit),
        ).fetchall()
        return [
            {"run_id": r[0], "started": r[1], "finished": r[2], "mode": r[3], "exit_code": r[4],
             "summary": json.loads(r[5]) if r[5] else None, "host": r[6], "pid": r[7]}
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
                self._execute("DELETE FROM exportkit.holdings WHERE instance = %s AND sink = %s", (self.instance, sink))
                self._execute("DELETE FROM exportkit.sink_kv WHERE instance = %s AND sink = %s", (self.instance, sink))
                # As in SQLite: without its holdings the records must be offered again, from the beginning.
                self.set_checkpoint(None)
                return
            for table in ("holdings", "sink_kv", "dead_letters"):
                self._execute(f"DELETE FROM exportkit.{table} WHERE instance = %s", (self.instance,))
            self.set_checkpoint(None)
            self.set_meta("last_reconcile", None)


class PgHoldings:
    """What one sink holds; implements :class:`exportkit.context.HoldingsView`."""

    def __init__(self, state: PgState, sink: str) -> None:
        self._state = state
        self.sink = sink
        self._preloaded: dict[str, Holding | None] | None = None

    @contextmanager
    def preloaded(self, source_ids: Iterable[str]) -> Iterator[dict[str, Holding]]:
        """Read the holdings of ``source_ids`` in one query; inside the block, :meth:`get` answers them from memory.

        As :meth:`exportkit.state.Holdings.preloaded`: the block covers one batch,
        whose holdings the engine writes only after the sink answered.
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
            "SELECT content_hash, remote FROM exportkit.holdings WHERE instance = %s AND sink = %s AND source_id = %s",
            (self._state.instance, self.sink, source_id),
        ).fetchone()
        return Holding(row[0], storedjson.loads(row[1]) if row[1] else None) if row else None

    def get_many(self, source_ids: Iterable[str]) -> dict[str, Holding]:
        ids = list(source_ids)
        if not ids:
            return {}
        rows = self._state._execute(
            "SELECT source_id, content_hash, remote FROM exportkit.holdings WHERE instance = %s AND sink = %s AND source_id = ANY(%s)",
            (self._state.instance, self.sink, ids),
        ).fetchall()
        return {sid: Holding(content_hash, storedjson.loads(remote) if remote else None) for sid, content_hash, remote in rows}

    def items(self) -> Iterator[tuple[str, Holding]]:
        """Every holding of the sink (read in one query)."""
        rows = self._state._execute(
            "SELECT source_id, content_hash, remote FROM exportkit.holdings WHERE instance = %s AND sink = %s",
            (self._state.instance, self.sink),
        ).fetchall()
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

    def count(self) -> int:
        """How many records the sink holds."""
        row = self._state._execute(
            "SELECT COUNT(*) FROM exportkit.holdings WHERE instance = %s AND sink = %s", (self._state.instance, self.sink)
        ).fetchone()
        return int(row[0])
