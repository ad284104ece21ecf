"""Instance state: WAL, file mode, checkpoint, holdings, dead letters, transactions, reset, runs."""

from __future__ import annotations

import os
import sqlite3
import stat
from datetime import datetime, timezone

import pytest

from exportkit.context import Holding
from exportkit.state import SOURCE_SINK, Checkpoint, DryRunStore, State, state_path

UTC = timezone.utc
T0 = datetime(2024, 1, 2, 3, 4, 5, 123000, tzinfo=UTC)


@pytest.fixture()
def state(tmp_path):
    with State.open(state_path(tmp_path, "inst")) as st:
        yield st


def test_wal_mode_and_private_files(tmp_path, state):
    assert state.path == tmp_path / "inst.state.sqlite"
    assert state._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    state.put_holdings("s", [("1", "h", None)])  # makes the WAL file exist
    for path in tmp_path.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, path


def test_reopen_keeps_data(tmp_path):
    path = state_path(tmp_path, "inst")
    with State.open(path) as st:
        st.set_checkpoint(Checkpoint(T0, "17"))
    with State.open(path) as st:
        assert st.checkpoint == Checkpoint(T0, "17")
        assert st.get_meta("schema_version") is None  # the version lives in PRAGMA user_version now


def test_checkpoint_round_trip(state):
    assert state.checkpoint is None
    state.set_checkpoint(Checkpoint(T0, "42"))
    got = state.checkpoint
    assert got == Checkpoint(T0, "42") and got.updated_at.tzinfo is not None
    assert got.position == (T0, (0, 42, ""))
    state.set_checkpoint(None)
    assert state.checkpoint is None


def test_last_reconcile(state):
    assert state.last_reconcile is None
    state.set_last_reconcile(T0)
    assert state.last_reconcile == T0


def test_holdings_put_get_drop(state):
    state.put_holdings("ctia", [("1", "hash1", {"judgement": "j1"}), ("2", "hash2", None)])
    state.put_holdings("stdout", [("1", "other", None)])
    view = state.holdings("ctia")
    assert view.get("1") == Holding("hash1", {"judgement": "j1"})
    assert view.get("2") == Holding("hash2", None)
    assert view.get("3") is None
    state.put_holdings("ctia", [("1", "hash1b", {"judgement": "j2"})])  # a new version replaces
    assert view.get("1") == Holding("hash1b", {"judgement": "j2"})
    assert state.held_ids("ctia") == {"1", "2"}
    assert state.count_holdings() == {"ctia": 2, "stdout": 1}
    assert view.count() == 2 and state.holdings("stdout").count() == 1 and state.holdings("none").count() == 0
    state.drop_holdings("ctia", ["1", "nope"])
    assert state.held_ids("ctia") == {"2"} and state.holdings("stdout").get("1") is not None


def test_get_many_chunks_past_sqlite_parameter_limits(state):
    ids = [str(i) for i in range(1, 1201)]
    state.put_holdings("s", [(i, f"h{i}", {"n": int(i)}) for i in ids])
    wanted = ids + ["missing-1", "missing-2"]
    got = state.holdings("s").get_many(wanted)
    assert len(got) == 1200 and got["1200"] == Holding("h1200", {"n": 1200})
    assert "missing-1" not in got
    assert state.holdings("s").get_many([]) == {}


def test_preloaded_holdings_answer_a_batch_from_one_query(state):
    state.put_holdings("s", [(str(i), f"h{i}", {"n": i}) for i in range(1, 11)])
    queries: list[str] = []
    state._conn.set_trace_callback(lambda sql: queries.append(sql) if sql.startswith("SELECT") else None)
    view = state.holdings("s")
    with view.preloaded([str(i) for i in range(1, 6)] + ["missing"]) as held:
        assert len(queries) == 1 and set(held) == {"1", "2", "3", "4", "5"}
        assert view.get("3") == Holding("h3", {"n": 3}) and view.get("missing") is None
        assert len(queries) == 1, "ids of the batch, held or not, are answered from memory"
        assert view.get("7") == Holding("h7", {"n": 7}) and len(queries) == 2, "other ids are still read"
    assert view.get("3") == Holding("h3", {"n": 3}) and len(queries) == 3, "after the batch, reads go to the database again"


def test_sink_store(state):
    store = state.store("ctia")
    assert store.get("feed", "dflt") == "dflt"
    store.set("feed", {"id": "f1", "n": [1, 2]})
    assert store.get("feed") == {"id": "f1", "n": [1, 2]}
    assert state.store("other").get("feed") is None
    store.delete("feed")
    store.delete("feed")  # absent: no error
    assert store.get("feed") is None


def test_sink_store_reads_many_keys_at_once(state):
    store = state.store("ctia")
    for n in range(1, 1201):
        store.set(f"generation:{n}", n)
    state.store("other").set("generation:1", "not mine")
    got = store.get_many([f"generation:{n}" for n in range(1, 1203)])
    assert len(got) == 1200 and got["generation:1"] == 1 and got["generation:1200"] == 1200
    assert store.get_many([]) == {}


def test_dead_letters_upsert_counts_attempts_and_returns_new_rows(state):
    assert state.add_dead_letters("ctia", [("1", "bad value", {"v": 1}), ("2", "bad type", None)], "run-1") == 2
    assert state.add_dead_letters("ctia", [("1", "still bad", {"v": 2}), ("3", "new", None)], "run-2") == 1
    assert state.add_dead_letters("stdout", [("1", "other sink", None)], "run-2") == 1
    rows = {(d.sink, d.source_id): d for d in state.dead_letters()}
    first = rows[("ctia", "1")]
    assert first.attempts == 2 and first.reason == "still bad" and first.record == {"v": 2} and first.run_id == "run-2"
    assert rows[("ctia", "2")].attempts == 1
    assert state.count_dead_letters() == {"ctia": 3, "stdout": 1}
    assert [d.source_id for d in state.dead_letters("ctia", limit=2)] == ["1", "2"]


def test_dead_letters_without_id_key_on_the_payload(state):
    assert state.add_dead_letters(SOURCE_SINK, [(None, "not JSON", "{garbage")], "r1") == 1
    assert state.add_dead_letters(SOURCE_SINK, [(None, "not JSON", "{garbage")], "r2") == 0
    assert state.add_dead_letters(SOURCE_SINK, [(None, "not JSON", "{other")], "r2") == 1
    rows = state.dead_letters(SOURCE_SINK)
    assert [r.attempts for r in rows] == [2, 1]


def test_remove_and_clear_dead_letters(state):
    state.add_dead_letters("s", [("1", "r", None), ("2", "r", None), ("3", "r", None)], "run")
    state.clear_dead_letter("s", ["1"])
    remaining = state.dead_letters("s")
    assert [d.source_id for d in remaining] == ["2", "3"]
    state.remove_dead_letters([remaining[0].id])
    assert [d.source_id for d in state.dead_letters("s")] == ["3"]


def test_transaction_commits_and_rolls_back(state):
    with state.transaction():
        state.put_holdings("s", [("1", "h", None)])
        state.set_checkpoint(Checkpoint(T0, "1"))
    with pytest.raises(RuntimeError):
        with state.transaction():
            state.put_holdings("s", [("2", "h", None)])
            state.add_dead_letters("s", [("3", "r", None)], "run")
            state.set_checkpoint(Checkpoint(T0, "2"))
            with state.transaction():  # nested blocks join the outer one
                state.store("s").set("k", 1)
                state.flush_sink_stores()
            raise RuntimeError("crash mid-batch")
    assert state.held_ids("s") == {"1"}
    assert state.checkpoint == Checkpoint(T0, "1")
    assert state.dead_letters() == [] and state.store("s").get("k") is None


def test_committed_data_is_visible_to_another_connection(state):
    with state.transaction():
        state.put_holdings("s", [("1", "h", None)])
    other = sqlite3.connect(state.path)
    try:
        assert other.execute("SELECT source_id FROM holdings").fetchall() == [("1",)]
    finally:
        other.close()


def fill(state):
    state.set_checkpoint(Checkpoint(T0, "9"))
    state.set_last_reconcile(T0)
    for sink in ("a", "b"):
        state.put_holdings(sink, [("1", "h", None)])
        state.store(sink).set("k", sink)
        state.add_dead_letters(sink, [("2", "r", None)], "run")
    state.flush_sink_stores()
    state.start_run("run-1", "incremental")


def test_reset_checkpoint_only(state):
    fill(state)
    state.reset(checkpoint_only=True)
    assert state.checkpoint is None
    assert state.held_ids("a") == {"1"} and state.last_reconcile == T0


def test_reset_one_sink(state):
    fill(state)
    state.reset(sink="a")
    assert state.held_ids("a") == set() and state.store("a").get("k") is None
    assert state.held_ids("b") == {"1"} and state.store("b").get("k") == "b"
    assert state.checkpoint is None  # records "a" held must be offered again


def test_reset_everything_keeps_run_history(state):
    fill(state)
    state.reset()
    assert state.checkpoint is None and state.last_reconcile is None
    assert state.count_holdings() == {} and state.count_dead_letters() == {}
    assert state.store("a").get("k") is None
    assert [r["run_id"] for r in state.runs()] == ["run-1"]


def test_runs_history_newest_first(state):
    for n in range(1, 5):
        state.start_run(f"run-{n}", "incremental")
    state.finish_run("run-4", 3, {"deferred": 2, "when": T0})
    runs = state.runs(limit=3)
    assert [r["run_id"] for r in runs] == ["run-4", "run-3", "run-2"]
    assert runs[0]["exit_code"] == 3 and runs[0]["summary"]["deferred"] == 2 and runs[0]["finished"]
    assert runs[1]["finished"] is None and runs[1]["summary"] is None and runs[1]["mode"] == "incremental"


def test_dry_run_store_never_writes(state):
    real = state.store("s")
    real.set("keep", "real")
    real.set("gone", "real")
    state.flush_sink_stores()
    dry = DryRunStore(real)
    dry.set("keep", "dry")
    dry.set("new", 1)
    dry.delete("gone")
    assert dry.get("keep") == "dry" and dry.get("new") == 1 and dry.get("gone", "dflt") == "dflt"
    assert real.get("keep") == "real" and real.get("new") is None and real.get("gone") == "real"
    assert dry.get_many(["keep", "new", "gone", "absent"]) == {"keep": "dry", "new": 1}
    dry.set("gone", "back")
    assert dry.get("gone") == "back"
    rows = state._conn.execute("SELECT key, value FROM sink_kv ORDER BY key").fetchall()
    assert rows == [("gone", '"real"'), ("keep", '"real"')]


def test_new_state_file_is_created_0600_whatever_the_umask(tmp_path):
    old = os.umask(0)
    try:
        with State.open(tmp_path / "x.state.sqlite") as st:
            st.put_holdings("s", [("1", "h", None)])
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "x.state.sqlite").stat().st_mode) == 0o600


def test_sink_store_writes_wait_for_the_batch_and_durable_ones_do_not(tmp_path):
    path = state_path(tmp_path, "inst")
    with State.open(path) as state:
        store = state.store("s")
        store.set("batched", 1)
        store.set_durable("intent", {"about_to": "send"})
        assert store.get("batched") == 1  # the sink reads its own write at once
        with State.open(path) as other:  # what a crash right now would leave
            assert other.store("s").get("batched") is None and other.store("s").get("intent") == {"about_to": "send"}
        with state.transaction():
            state.flush_sink_stores()
        with State.open(path) as other:
            assert other.store("s").get("batched") == 1
        store.set("dropped", True)
        state.discard_sink_stores()
        assert store.get("dropped") is None


DURABLE_THEN_DIE = """
import os, sys
from exportkit.state import State
state = State.open(sys.argv[1])
store, holdings = state.store("ctia"), state.holdings("ctia")
{writes}
os._exit(0)                              # no close, no commit at exit: as after SIGKILL
"""


def _die_after(tmp_path, writes: str) -> State:
    import subprocess
    import sys

    path = state_path(tmp_path, "inst")
    State.open(path).close()
    program = DURABLE_THEN_DIE.replace("{writes}", writes)
    result = subprocess.run([sys.executable, "-c", program, str(path)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    return State.open(path)


def test_durable_writes_are_committed_before_they_return(tmp_path):
    reopened = _die_after(
        tmp_path,
        "store.set_durable('intents', [{'xid': 'x-1'}])\n"
        "holdings.put_durable('1', 'h1', {'judgement_id': 'j1'})\n"
        "holdings.put_durable('2', 'h2', None)\n"
        "holdings.drop_durable('2')\n",
    )
    with reopened:
        assert reopened.store("ctia").get("intents") == [{"xid": "x-1"}]
        assert reopened.holdings("ctia").get("1") == Holding("h1", {"judgement_id": "j1"})
        assert reopened.holdings("ctia").get("2") is None


def test_durable_write_from_a_sink_thread_waits_for_the_batch_transaction_and_commits_alone(state):
    import threading

    store = state.store("ctia")
    done = threading.Event()
    with state.transaction():
        state.put_holdings("ctia", [("1", "h", None)])
        worker = threading.Thread(target=lambda: (store.set_durable("k", 1), done.set()))
        worker.start()
        assert not done.wait(0.2), "the durable write must not join the batch transaction of another thread"
    worker.join(5)
    assert done.is_set() and store.get("k") == 1


def test_dry_run_store_keeps_durable_writes_in_memory(state):
    dry = DryRunStore(state.store("ctia"))
    dry.set_durable("k", 2)
    assert dry.get("k") == 2 and state.store("ctia").get("k") is None


def test_a_sink_store_made_without_rowid_is_rebuilt_keeping_its_values(tmp_path):
    path = state_path(tmp_path, "old")
    conn = sqlite3.connect(path)
    conn.executescript(
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
        "CREATE TABLE holdings (sink TEXT NOT NULL, source_id TEXT NOT NULL, content_hash TEXT NOT NULL, remote TEXT,"
        " updated_at TEXT NOT NULL, PRIMARY KEY (sink, source_id)) WITHOUT ROWID;"
        "CREATE TABLE sink_kv (sink TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY (sink, key)) WITHOUT ROWID;"
        "CREATE TABLE dead_letters (id INTEGER PRIMARY KEY, sink TEXT NOT NULL, source_id TEXT, reason TEXT NOT NULL, record TEXT,"
        " run_id TEXT, created_at TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 1);"
        "CREATE UNIQUE INDEX dead_letters_key ON dead_letters (sink, source_id);"
        "CREATE TABLE runs (run_id TEXT PRIMARY KEY, started TEXT NOT NULL, finished TEXT, mode TEXT NOT NULL, exit_code INTEGER, summary TEXT);"
        "PRAGMA user_version = 2;"
    )
    conn.execute("INSERT INTO sink_kv VALUES ('ctia', 'feed', '\"f1\"'), ('ctia', 'intents', ?)", ('"' + "x" * 100_000 + '"',))
    conn.commit()
    conn.close()
    os.chmod(path, 0o600)
    with State.open(path) as st:
        sql = st._conn.execute("SELECT sql FROM sqlite_master WHERE name = 'sink_kv'").fetchone()[0]
        assert "WITHOUT ROWID" not in sql.upper(), "large values must stay out of the key search"
        assert st.store("ctia").get("feed") == "f1" and len(st.store("ctia").get("intents")) == 100_000
        assert st.store("ctia").get_many(["feed", "absent"]) == {"feed": "f1"}
