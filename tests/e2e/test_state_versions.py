"""State from the previous release migrates, state from a newer one is refused: through the real CLI."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from exportkit.config import write_config
from exportkit.migrations import SCHEMA_VERSION

from .conftest import CLI, make_records, read_jsonl, write_jsonl

pytestmark = pytest.mark.integration

FIXTURE = Path(__file__).parents[1] / "fixtures" / "state-v1.sqlite"


def instance(folder: Path) -> None:
    write_jsonl(folder / "records.jsonl", make_records(3, minutes=24 * 60))  # after the old checkpoint
    write_config(folder / "prod.toml", {
        "source": {"type": "file", "path": "records.jsonl"},
        "export": {"sinks": ["stdout"]},
        "sinks": {"stdout": {"path": str(folder / "out.jsonl")}},
    })


def user_version(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])


def test_a_state_from_0_1_0_is_migrated_by_the_next_run(cli: CLI, tmp_path: Path) -> None:
    instance(tmp_path)
    state = tmp_path / "prod.state.sqlite"
    shutil.copy(FIXTURE, state)
    shown = cli("state", "show", "-n", "prod", "-c", str(tmp_path))
    assert shown.returncode == 0, shown.stderr
    assert "42" in shown.stdout  # the old checkpoint is still there
    assert user_version(state) == SCHEMA_VERSION
    done = cli("run", "-n", "prod", "-c", str(tmp_path), "--reconcile")
    assert done.returncode == 0, done.stderr
    assert len(read_jsonl(tmp_path / "out.jsonl")) == 3


def test_a_state_from_a_newer_release_is_refused_naming_both_versions(cli: CLI, tmp_path: Path) -> None:
    instance(tmp_path)
    state = tmp_path / "prod.state.sqlite"
    shutil.copy(FIXTURE, state)
    with sqlite3.connect(state) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    done = cli("run", "-n", "prod", "-c", str(tmp_path))
    assert done.returncode == 1
    assert f"schema version {SCHEMA_VERSION + 1}" in done.stderr and f"up to {SCHEMA_VERSION}" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "out.jsonl").exists()
    assert user_version(state) == SCHEMA_VERSION + 1
