"""Moving SQLite state into PostgreSQL (the library behind ``exportkit state migrate``), on a real server."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from exportkit.context import Holding
from exportkit.errors import ExportkitError
from exportkit.postgres.move import move_to_postgres
from exportkit.postgres.state import PgState
from exportkit.state import SOURCE_SINK, Checkpoint, State, state_path
from exportkit.statelocation import MOVED_TO_KEY

pytestmark = [pytest.mark.integration, pytest.mark.fleet]

T0 = datetime(2024, 5, 6, 7, 8, 9, tzinfo=timezone.utc)


def fill(folder, name="prod"):
    with State.open(state_path(folder, name)) as st:
        st.set_checkpoint(Checkpoint(T0, "77"))
        st.set_last_reconcile(T0)
        st.put_holdings("ctia", [("1", "h1", {"judgement": "j1", "gen": 2}), ("2", "h2", None)])
        st.store("ctia").set_durable("feed", {"id": "feed-1"})
        st.add_dead_letters("ctia", [("9", "bad", {"v": 9})], "r1")
        st.add_dead_letters(SOURCE_SINK, [(None, "unreadable", "raw")], "r1")
        st.start_run("r1", "incremental")
        st.finish_run("r1", 3, {"pulled": 3})
        st.start_run("r2", "incremental")
        st.finish_run("r2", 0, {"pulled": 0})


def test_everything_moves_and_the_sqlite_file_is_marked(tmp_path, pg_url):
    fill(tmp_path)
    result = move_to_postgres(tmp_path, "prod", pg_url)
    assert result.counts == {"meta": 2, "holdings": 2, "sink_kv": 1, "dead_letters": 2, "runs": 2}
    assert "@" in result.target and pg_url.split(":")[2].split("@")[0] not in result.target
    with PgState.open(pg_url, "prod") as pg:
        assert pg.checkpoint == Checkpoint(T0, "77") and pg.last_reconcile == T0
        assert pg.holdings("ctia").get_many(["1", "2"]) == {"1": Holding("h1", {"judgement": "j1", "gen": 2}), "2": Holding("h2", None)}
        assert pg.store("ctia").get("feed") == {"id": "feed-1"}
        assert [(d.sink, d.source_id, d.record) for d in pg.dead_letters()] == [("ctia", "9", {"v": 9}), (SOURCE_SINK, None, "raw")]
        assert [(r["run_id"], r["exit_code"]) for r in pg.runs()] == [("r2", 0), ("r1", 3)]
        assert pg.runs()[0]["host"]
    with State.open(state_path(tmp_path, "prod")) as st:
        assert st.get_meta(MOVED_TO_KEY).startswith(result.target)
        assert st.held_ids("ctia") == {"1", "2"}, "the SQLite file stays as a backup"
    with pytest.raises(ExportkitError, match="moved already"):
        move_to_postgres(tmp_path, "prod", pg_url)


def test_a_database_that_already_holds_the_instance_is_not_mixed_into(tmp_path, pg_url):
    fill(tmp_path)
    with PgState.open(pg_url, "prod") as pg:
        pg.put_holdings("ctia", [("5", "other", None)])
    with pytest.raises(ExportkitError, match="already holds state"):
        move_to_postgres(tmp_path, "prod", pg_url)
    with State.open(state_path(tmp_path, "prod")) as st:
        assert st.get_meta(MOVED_TO_KEY) is None
    with PgState.open(pg_url, "prod") as pg:
        assert pg.held_ids("ctia") == {"5"} and pg.runs() == []


def test_nothing_to_move_is_an_error(tmp_path, pg_url):
    with pytest.raises(ExportkitError, match="no SQLite state"):
        move_to_postgres(tmp_path, "prod", pg_url)
