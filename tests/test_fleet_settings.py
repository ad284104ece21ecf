"""[state] and [schedule] in an instance config, and where each instance's state and lock live."""

from __future__ import annotations

from pathlib import Path

import pytest

from exportkit.config import write_config
from exportkit.errors import ConfigError, ExportkitError
from exportkit.fleet.scheduled import scheduled_instances
from exportkit.fleet.status import render_rows
from exportkit.lock import InstanceLock
from exportkit.postgres.connect import display_url
from exportkit.postgres.lock import AdvisoryLock
from exportkit.state import State, state_path
from exportkit.statelocation import MOVED_TO_KEY, instance_lock, open_backend, state_url
from exportkit.config import load_instance
from exportkit.plugins import discover


def write(folder: Path, name: str, **tables: dict) -> None:
    data = {"source": {"type": "file", "path": "records.jsonl"}, "export": {"sinks": ["stdout"]}, "sinks": {"stdout": {"path": "out.jsonl"}}}
    data.update(tables)
    write_config(folder / f"{name}.toml", data)


def load(folder: Path, name: str, environ: dict | None = None):
    registry = discover()
    return load_instance(folder, name, registry.sink_types, environ=environ or {})


def test_state_url_and_schedule_are_validated_with_everything_else(tmp_path):
    write(tmp_path, "bad", state={"url": "mysql://x/y", "colour": 1}, schedule={"every": "5m", "cron": "* * * * *"})
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, "bad")
    text = str(caught.value)
    assert "state.url" in text and "postgresql://" in text
    assert "state.colour" in text and "schedule.cron" in text and "not both" in text


def test_state_url_is_a_secret_and_schedule_is_parsed(tmp_path):
    write(tmp_path, "ok", state={"url": "env:STATE_URL"}, schedule={"cron": "*/15 * * * *"})
    config = load(tmp_path, "ok", {"STATE_URL": "postgresql://u:pw-secret@db/fleet"})
    assert config.state.url.reveal() == "postgresql://u:pw-secret@db/fleet" and "pw-secret" not in repr(config)
    assert config.schedule.schedule.text == "cron */15 * * * *"
    assert load(tmp_path, "ok", {"STATE_URL": "postgresql://u:p@db/f"}).state.url.source == "env:STATE_URL"


def test_the_config_beats_the_fleet_variable_which_beats_sqlite(tmp_path):
    write(tmp_path, "own", state={"url": "env:OWN"})
    write(tmp_path, "plain")
    env = {"OWN": "postgresql://a@one/x", "EXPORTKIT_STATE_URL": "postgresql://b@two/y"}
    assert state_url(tmp_path, "own", environ=env) == "postgresql://a@one/x"
    assert state_url(tmp_path, "plain", environ=env) == "postgresql://b@two/y"
    assert state_url(tmp_path, "plain", environ={}) is None
    assert isinstance(instance_lock(tmp_path, "plain", environ={}), InstanceLock)
    assert isinstance(instance_lock(tmp_path, "plain", environ=env), AdvisoryLock)
    with pytest.raises(ExportkitError, match="OWN is not set"):
        state_url(tmp_path, "own", environ={})


def test_sqlite_state_moved_to_postgres_refuses_to_run_locally(tmp_path):
    write(tmp_path, "inst")
    with State.open(state_path(tmp_path, "inst")) as st:
        st.set_meta(MOVED_TO_KEY, "postgresql://u@db/fleet on 2026-12-01T00:00:00Z")
    with pytest.raises(ExportkitError, match="moved to PostgreSQL") as caught:
        open_backend(tmp_path, "inst", environ={})
    assert "EXPORTKIT_STATE_URL" in str(caught.value)


def test_display_url_drops_the_password_and_options():
    assert display_url("postgresql://user:s3cret@db.example:5433/fleet?sslmode=require") == "postgresql://user@db.example:5433/fleet"
    assert display_url("postgresql://db/fleet") == "postgresql://db/fleet"


def test_beat_schedules_only_instances_with_a_valid_schedule(tmp_path, caplog):
    write(tmp_path, "every", schedule={"every": "15m"})
    write(tmp_path, "cron", schedule={"cron": "0 * * * *"})
    write(tmp_path, "none")
    write(tmp_path, "broken", schedule={"cron": "99 * * * *"})
    found = scheduled_instances(tmp_path)
    assert {n: s.text for n, s in found.items()} == {"every": "every 15m", "cron": "cron 0 * * * *"}
    assert "broken" in caplog.text and "outside 0-59" in caplog.text


def test_status_lines_say_schedule_last_run_and_who_runs_it_now():
    rows = [
        {"name": "a", "schedule": "every 15m", "next_run": "2026-12-01T16:15:00.000Z", "state": "postgresql://u@db/f",
         "last_run": {"started": "2026-12-01T16:00:00.000Z", "host": "w1", "exit_code": 0, "pulled": 5, "accepted": 5,
                      "deferred": 0, "dead_lettered": 0}, "running": {"host": "w2", "pid": 42, "since": "2026-12-01T16:15:01Z"}},
        {"name": "b", "schedule": None, "next_run": None, "state": "/etc/exportkit/b.state.sqlite", "last_run": None, "running": None},
    ]
    assert render_rows(rows) == [
        "a: every 15m, next run 2026-12-01T16:15:00.000Z",
        "    state: postgresql://u@db/f",
        "    last run: 2026-12-01T16:00:00.000Z on w1, exit 0 (pulled 5, accepted 5, deferred 0, dead_lettered 0)",
        "    running now on w2 pid 42 since 2026-12-01T16:15:01Z",
        "b: not scheduled",
        "    state: /etc/exportkit/b.state.sqlite",
        "    last run: never",
    ]


def test_a_worker_never_runs_an_instance_on_sqlite_state(tmp_path, monkeypatch, caplog):
    from exportkit.fleet.worker import run_one

    monkeypatch.delenv("EXPORTKIT_STATE_URL", raising=False)
    write(tmp_path, "local", schedule={"every": "15m"})
    outcome = run_one("local", tmp_path)
    assert outcome["exit_code"] == 1
    assert "not run" in caplog.text and "[state] url" in caplog.text
    assert not (tmp_path / "local.state.sqlite").exists() and not (tmp_path / "local.report.json").exists()
