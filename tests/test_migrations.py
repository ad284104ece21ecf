"""State schema versions: a database from the previous release migrates, a newer one is refused."""

from __future__ import annotations

import shutil
import sqlite3
from datetime import datetime, timezone
from pathlib import Path

import pytest

from exportkit.context import Holding
from exportkit.errors import StateVersionError
from exportkit.migrations import SCHEMA_VERSION, STEPS, migrate
from exportkit.state import Checkpoint, State, state_path

FIXTURE = Path(__file__).parent / "fixtures" / "state-v1.sqlite"


def user_version(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])


def test_a_new_database_gets_the_current_version(tmp_path):
    path = state_path(tmp_path, "inst")
    State.open(path).close()
    assert user_version(path) == SCHEMA_VERSION


def test_a_database_from_0_1_0_migrates_and_keeps_everything(tmp_path):
    path = tmp_path / "inst.state.sqlite"
    shutil.copy(FIXTURE, path)
    assert user_version(path) == 0
    with State.open(path) as state:
        assert state.checkpoint == Checkpoint(datetime(2024, 3, 1, 12, 0, tzinfo=timezone.utc), "42")
        assert state.holdings("ctia").get_many(["41", "42"]) == {"41": Holding("hash41", {"judgement": "j-41"}), "42": Holding("hash42", None)}
        assert state.store("ctia").get("feed") == {"id": "feed-1"}
        (letter,) = state.dead_letters("ctia")
        assert letter.source_id == "43" and letter.reason == "rejected: bad value"
        assert state.last_reconcile == datetime(2024, 3, 1, tzinfo=timezone.utc)
        assert [r["run_id"] for r in state.runs()] == ["run-v1"]
        assert state.get_meta("schema_version") is None
        state.put_holdings("ctia", [("44", "hash44", None)])  # and it is writable as a current database
    assert user_version(path) == SCHEMA_VERSION


def test_a_newer_database_is_refused_naming_both_versions(tmp_path):
    path = tmp_path / "inst.state.sqlite"
    State.open(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA user_version = 999")
    with pytest.raises(StateVersionError) as caught:
        State.open(path)
    assert "999" in str(caught.value) and f"up to {SCHEMA_VERSION}" in str(caught.value)
    assert caught.value.found == 999 and caught.value.supported == SCHEMA_VERSION
    assert user_version(path) == 999  # untouched


def test_a_failing_step_leaves_the_database_as_it_was(tmp_path, monkeypatch):
    path = tmp_path / "inst.state.sqlite"
    shutil.copy(FIXTURE, path)

    def broken(conn: sqlite3.Connection) -> None:
        conn.execute("DELETE FROM holdings")
        raise RuntimeError("step failed half way")

    monkeypatch.setitem(STEPS, SCHEMA_VERSION, broken)
    conn = sqlite3.connect(path, isolation_level=None)
    with pytest.raises(RuntimeError):
        migrate(conn, path)
    assert conn.execute("SELECT COUNT(*) FROM holdings").fetchone()[0] == 2
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 0
    conn.close()


def test_every_version_has_a_step():
    assert sorted(STEPS) == list(range(2, SCHEMA_VERSION + 1))


def test_run_refuses_a_newer_database_with_exit_1_and_both_versions(tmp_path):
    from click.testing import CliRunner

    from exportkit.cli import cli
    from exportkit.config import write_config

    (tmp_path / "records.jsonl").write_text("", encoding="utf-8")
    write_config(tmp_path / "one.toml", {
        "source": {"type": "file", "path": "records.jsonl"},
        "export": {"sinks": ["stdout"]},
        "sinks": {"stdout": {"path": str(tmp_path / "out.jsonl")}},
    })
    path = state_path(tmp_path, "one")
    State.open(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA user_version = 999")
    result = CliRunner().invoke(cli, ["run", "-n", "one", "-c", str(tmp_path)])
    assert result.exit_code == 1, result.output
    assert "schema version 999" in result.output and f"up to {SCHEMA_VERSION}" in result.output
    assert "Traceback" not in result.output
