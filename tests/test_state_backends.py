"""The state contract, run against both backends: SQLite beside the config and PostgreSQL (a real server)."""

from __future__ import annotations

import json

import inspect
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import pytest

from exportkit.context import Holding
from exportkit.errors import StateVersionError
from exportkit.migrations import SCHEMA_VERSION, STEPS
from exportkit.postgres import schema as pg_schema
from exportkit.postgres.state import PgHoldings, PgState
from exportkit.state import SOURCE_SINK, Checkpoint, Holdings, State, state_path

T0 = datetime(2024, 1, 2, 3, 4, 5, 123000, tzinfo=timezone.utc)
T1 = datetime(2024, 1, 2, 4, 0, 0, tzinfo=timezone.utc)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=[pytest.mark.integration, pytest.mark.fleet])])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """A factory ``open(instance="inst")`` for the backend under test; states opened are closed at the end."""
    opened: list[Any] = []
    url = request.getfixturevalue("pg_url") if request.param == "postgresql" else None

    def open_state(instance: str = "inst") -> Any:
        st = PgState.open(url, instance) if url else State.open(state_path(tmp_path, instance))
        opened.append(st)
        return st

    yield open_state
    for st in opened:
        try:
            st.close()
        except Exception:
            pass


def test_pg_state_has_every_public_method_of_the_sqlite_state() -> None:
    """A method added to the SQLite backend must be added to PostgreSQL's too (the engine may call it)."""
    wanted = {n for n, _ in inspect.getmembers(State) if not n.startswith("_")} - {"open", "path"}
    missing = sorted(n for n in wanted if not hasattr(PgState, n))
    assert not missing, f"PgState lacks {missing}"
    views = {n for n, _ in inspect.getmembers(Holdings) if not n.startswith("_")} - {"sink"}
    assert not sorted(n for n in views if not hasattr(PgHoldings, n)), "PgHoldings lacks what the SQLite holdings view has"


def test_every_sqlite_migration_after_postgres_began_has_a_postgres_step() -> None:
    needed = {v for v in STEPS if v > pg_schema.FIRST_VERSION}
    assert needed <= set(pg_schema.STEPS), f"PostgreSQL steps missing for versions {sorted(needed - set(pg_schema.STEPS))}"
    assert pg_schema.FIRST_VERSION <= SCHEMA_VERSION


def test_checkpoint_and_reconcile_survive_reopening(backend: Any) -> None:
    st = backend()
    assert st.checkpoint is None and st.last_reconcile is None
    st.set_checkpoint(Checkpoint(T0, "42"))
    st.set_last_reconcile(T1)
    st.close()
    again = backend()
    assert again.checkpoint == Checkpoint(T0, "42") and again.checkpoint.updated_at.tzinfo is not None
    assert again.last_reconcile == T1
    again.set_checkpoint(None)
    assert again.checkpoint is None


def test_holdings_put_get_many_drop_count(backend: Any) -> None:
    st = backend()
    st.put_holdings("ctia", [("1", "h1", {"judgement": "j1"}), ("2", "h2", None)])
    st.put_holdings("stdout", [("1", "other", None)])
    st.put_holdings("ctia", [("1", "h1b", {"judgement": "j1b"})])  # an update, not a second row
    view = st.holdings("ctia")
    assert view.get("1") == Holding("h1b", {"judgement": "j1b"})
    assert view.get("3") is None
    assert view.get_many(["1", "2", "3"]) == {"1": Holding("h1b", {"judgement": "j1b"}), "2": Holding("h2", None)}
    assert view.get_many([]) == {}
    assert st.held_ids("ctia") == {"1", "2"}
    assert st.count_holdings() == {"ctia": 2, "stdout": 1}
    assert view.count() == 2 and st.holdings("none").count() == 0
    assert st.holds_any("ctia") and not st.holds_any("none")
    st.drop_holdings("ctia", ["1", "9"])
    assert st.held_ids("ctia") == {"2"}
    many = [(str(i), f"h{i}", None) for i in range(1500)]  # past SQLite's parameter limit per statement
    st.put_holdings("bulk", many)
    assert len(st.holdings("bulk").get_many(str(i) for i in range(1500))) == 1500


def test_durable_holdings_commit_at_once_and_items_lists_them(backend: Any) -> None:
    st = backend()
    view = st.holdings("ctia")
    view.put_durable("1", "h1", {"judgement": "j1"})
    view.put_durable("2", "h2", None)
    view.drop_durable("2")
    st.close()
    again = backend().holdings("ctia")
    assert dict(again.items()) == {"1": Holding("h1", {"judgement": "j1"})} and again.count() == 1


def test_a_transaction_commits_together_or_not_at_all(backend: Any) -> None:
    st = backend()
    with pytest.raises(RuntimeError):
        with st.transaction():
            st.put_holdings("ctia", [("1", "h", None)])
            st.set_checkpoint(Checkpoint(T0, "1"))
            with st.transaction():  # nested: joins the outer one
                st.add_dead_letters("ctia", [("2", "bad", {"v": 1})], "run-1")
            raise RuntimeError("crash before commit")
    assert st.held_ids("ctia") == set() and st.checkpoint is None and st.count_dead_letters() == {}
    with st.transaction():
        st.put_holdings("ctia", [("1", "h", None)])
        st.set_checkpoint(Checkpoint(T0, "1"))
    st.close()
    again = backend()
    assert again.held_ids("ctia") == {"1"} and again.checkpoint == Checkpoint(T0, "1")


def test_sink_store_writes_wait_for_the_batch_and_durable_ones_do_not(backend: Any) -> None:
    st = backend()
    store = st.store("ctia")
    assert st.store("ctia") is store
    store.set("feed", {"id": "f1"})
    assert store.get("feed") == {"id": "f1"}  # the sink reads its own pending write
    assert st.read_kv("ctia", "feed") is None  # not stored yet
    with st.transaction():
        st.flush_sink_stores()
    assert json.loads(st.read_kv("ctia", "feed")) == {"id": "f1"}
    assert {k: json.loads(v) for k, v in st.read_kv_many("ctia", ["feed", "absent"]).items()} == {"feed": {"id": "f1"}}
    assert st.read_kv_many("ctia", []) == {}
    store.set("lost", 1)
    st.discard_sink_stores()
    assert store.get("lost") is None
    store.delete("feed")
    with st.transaction():
        st.flush_sink_stores()
    assert store.get("feed", "gone") == "gone"
    store.set_durable("intent", ["x"])
    st.close()
    assert backend().store("ctia").get("intent") == ["x"]


def test_set_durable_from_a_sink_thread_waits_for_the_batch_in_progress(backend: Any) -> None:
    st = backend()
    done = threading.Event()

    def sink_thread() -> None:
        st.store("ctia").set_durable("intent", 1)
        done.set()

    with st.transaction():
        worker = threading.Thread(target=sink_thread)
        worker.start()
        assert not done.wait(0.3), "a durable write must not slip into the engine's open batch"
        st.put_holdings("ctia", [("1", "h", None)])
    worker.join(10)
    assert done.is_set() and st.store("ctia").get("intent") == 1


def test_dead_letters_count_new_ones_and_update_known_ones(backend: Any) -> None:
    st = backend()
    assert st.add_dead_letters("ctia", [("1", "bad type", {"v": 1}), ("2", "too long", {"v": 2})], "run-1") == 2
    assert st.add_dead_letters("ctia", [("1", "still bad", {"v": 1})], "run-2") == 0
    assert st.add_dead_letters(SOURCE_SINK, [(None, "unreadable", "raw line")], "run-1") == 1
    assert st.add_dead_letters(SOURCE_SINK, [(None, "unreadable", "raw line")], "run-2") == 0
    letters = st.dead_letters()
    assert [(d.sink, d.source_id, d.attempts) for d in letters] == [("ctia", "1", 2), ("ctia", "2", 1), (SOURCE_SINK, None, 2)]
    assert letters[0].reason == "still bad" and letters[0].record == {"v": 1} and letters[0].run_id == "run-2"
    assert st.count_dead_letters() == {"ctia": 2, SOURCE_SINK: 1}
    assert [d.source_id for d in st.dead_letters("ctia", limit=1)] == ["1"]
    st.clear_dead_letter("ctia", ["1"])
    st.remove_dead_letters([letters[2].id])
    assert [d.source_id for d in st.dead_letters()] == ["2"]


def test_runs_newest_first_with_their_summary(backend: Any) -> None:
    st = backend()
    st.start_run("r1", "incremental")
    st.finish_run("r1", 0, {"pulled": 3})
    st.start_run("r2", "historical")
    runs = st.runs()
    assert [r["run_id"] for r in runs] == ["r2", "r1"]
    assert runs[0]["exit_code"] is None and runs[1]["exit_code"] == 0 and runs[1]["summary"] == {"pulled": 3}
    assert runs[1]["mode"] == "incremental" and runs[1]["finished"] is not None
    assert len(st.runs(limit=1)) == 1


def test_reset_forgets_what_it_says(backend: Any) -> None:
    st = backend()

    def fill() -> None:
        st.put_holdings("ctia", [("1", "h", None)])
        st.put_holdings("stdout", [("1", "h", None)])
        st.store("ctia").set_durable("k", 1)
        st.add_dead_letters("ctia", [("2", "bad", None)], "r")
        st.set_checkpoint(Checkpoint(T0, "1"))
        st.set_last_reconcile(T0)
        st.start_run("r", "incremental")

    fill()
    st.reset(checkpoint_only=True)
    assert st.checkpoint is None and st.held_ids("ctia") == {"1"}
    st.set_checkpoint(Checkpoint(T0, "1"))
    st.reset(sink="ctia")
    assert st.held_ids("ctia") == set() and st.held_ids("stdout") == {"1"} and st.read_kv("ctia", "k") is None
    assert st.checkpoint is None and st.count_dead_letters() == {"ctia": 1}
    fill_again = st.set_checkpoint(Checkpoint(T0, "1"))
    assert fill_again is None
    st.reset()
    assert st.count_holdings() == {} and st.count_dead_letters() == {} and st.checkpoint is None and st.last_reconcile is None
    assert [r["run_id"] for r in st.runs()] == ["r"], "the history stays"


@pytest.mark.integration
@pytest.mark.fleet
def test_postgres_instances_share_a_database_and_never_see_each_other(pg_url: str) -> None:
    with PgState.open(pg_url, "alpha") as a, PgState.open(pg_url, "beta") as b:
        a.put_holdings("ctia", [("1", "h", None)])
        a.set_checkpoint(Checkpoint(T0, "1"))
        a.add_dead_letters("ctia", [("7", "bad", None)], "r")
        a.start_run("r", "incremental")
        assert b.held_ids("ctia") == set() and b.checkpoint is None and b.dead_letters() == [] and b.runs() == []
        b.reset()
        assert a.held_ids("ctia") == {"1"} and a.count_dead_letters() == {"ctia": 1}
        assert a.runs()[0]["host"] and a.runs()[0]["pid"]


@pytest.mark.integration
@pytest.mark.fleet
def test_postgres_schema_has_the_sqlite_version_and_a_newer_one_is_refused(pg_url: str) -> None:
    import psycopg

    with PgState.open(pg_url, "inst") as st:
        assert pg_schema.schema_version(st._conn) == SCHEMA_VERSION
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("UPDATE exportkit.schema_version SET version = %s", (SCHEMA_VERSION + 1,))
    with pytest.raises(StateVersionError) as caught:
        PgState.open(pg_url, "inst")
    message = str(caught.value)
    assert f"schema version {SCHEMA_VERSION + 1}" in message and "127.0.0.1" in message
    assert pg_url.split(":")[2].split("@")[0] not in message, "no password in the message"


@pytest.mark.integration
@pytest.mark.fleet
def test_workers_starting_together_create_the_schema_once(pg_url: str) -> None:
    errors: list[BaseException] = []

    def open_one(i: int) -> None:
        try:
            PgState.open(pg_url, f"inst{i}").close()
        except BaseException as exc:  # collected for the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=open_one, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
