"""One thread per sink, containment of sink hooks, close and open failures in the report.

The sinks here are written as a third-party team would write them: plain
classes with ``@hookimpl`` methods, one of them holding a ``sqlite3``
connection opened in ``exportkit_open`` (thread-bound by default).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

import attrs
import pytest

from exportkit import BatchResult, SinkType, hookimpl, setting
from exportkit.config import load_instance, write_config
from exportkit.engine import run_instance
from exportkit.plugins import PluginRegistry
from exportkit.sinkrun import SinkThread
from exportkit.state import State, state_path
from exportkit.testing import SinkHarness, make_indicators, recording_sink_type


@attrs.frozen
class DbSettings:
    path: str = setting(help="The SQLite file records go to.")


class SqliteSink:
    """Keeps one sqlite3 connection for the run (sqlite3 objects belong to the thread that made them)."""

    def __init__(self, settings: DbSettings) -> None:
        self.path = settings.path
        self.db: sqlite3.Connection | None = None

    @hookimpl
    def exportkit_open(self, context):
        self.db = sqlite3.connect(self.path)
        self.db.execute("CREATE TABLE IF NOT EXISTS records (id TEXT PRIMARY KEY, value TEXT)")

    @hookimpl
    def exportkit_write(self, records, context):
        self.db.executemany("INSERT OR REPLACE INTO records VALUES (?, ?)", [(r.source_id, r.value) for r in records])
        self.db.commit()  # accepted means durable when the hook returns

    @hookimpl
    def exportkit_withdraw(self, withdrawals, context):
        self.db.executemany("DELETE FROM records WHERE id = ?", [(w.source_id,) for w in withdrawals])
        self.db.commit()

    @hookimpl
    def exportkit_close(self, context, error):
        self.db.close()


def stored_ids(path: Path) -> list[str]:
    with sqlite3.connect(path) as db:
        return sorted((row[0] for row in db.execute("SELECT id FROM records")), key=int)


class ThreadSpy:
    """Notes the thread of every hook call; two of them wait for each other in write."""

    barrier: threading.Barrier | None = None

    def __init__(self, settings: Any) -> None:
        self.threads: dict[str, set[int]] = {}

    def _seen(self, hook: str) -> None:
        self.threads.setdefault(hook, set()).add(threading.get_ident())

    @hookimpl
    def exportkit_open(self, context):
        self._seen("open")

    @hookimpl
    def exportkit_write(self, records, context):
        self._seen("write")
        if ThreadSpy.barrier is not None:
            ThreadSpy.barrier.wait(timeout=10)  # only passes when both sinks write at the same time

    @hookimpl
    def exportkit_withdraw(self, withdrawals, context):
        self._seen("withdraw")

    @hookimpl
    def exportkit_close(self, context, error):
        self._seen("close")


@attrs.frozen
class NoSettings:
    pass


class Plugin:
    def __init__(self, *types: SinkType) -> None:
        self.types = list(types)

    @hookimpl
    def exportkit_sink_types(self):
        return self.types


def setup(folder: Path, records, types: list[SinkType], sinks: dict[str, dict[str, Any]], *, export: dict[str, Any] | None = None, extra=None):
    with open(folder / "records.jsonl", "w") as fh:
        for record in records:
            fh.write(json.dumps(record.to_dict()) + "\n")
    write_config(folder / "inst.toml", {
        "source": {"type": "file", "path": "records.jsonl"},
        "export": {"sinks": list(sinks), "batch_size": 10, **(export or {})},
        "sinks": sinks,
    })
    registry = PluginRegistry()
    registry.add("acme", Plugin(*types), distribution="acme-sinks", version="1.0")
    for name, obj in (extra or {}).items():
        registry.add(name, obj)
    return load_instance(folder, "inst", registry.sink_types, unavailable_sinks=registry.unavailable), registry


def test_a_sink_holding_a_sqlite_connection_delivers_everything_in_a_run(tmp_path):
    db = tmp_path / "target.sqlite"
    config, registry = setup(tmp_path, make_indicators(25), [SinkType("db", DbSettings, SqliteSink)], {"db": {"path": str(db)}})
    report = run_instance(config, registry)
    assert report.sinks["db"]["error"] is None, report.sinks["db"]
    assert report.exit_code == 0 and report.sinks["db"]["accepted"] == 25
    assert stored_ids(db) == [str(i) for i in range(1, 26)]


def test_each_sink_runs_every_hook_on_one_own_thread_concurrently_with_the_others(tmp_path):
    spies: list[ThreadSpy] = []

    def factory(settings: Any) -> ThreadSpy:
        spies.append(ThreadSpy(settings))
        return spies[-1]

    records = make_indicators(30)
    records[3] = attrs.evolve(records[3], status="Expired")  # a withdrawal once held
    records[5] = attrs.evolve(records[5], description="changed")  # and a write
    config, registry = setup(tmp_path, make_indicators(30), [SinkType("spy", NoSettings, factory)], {"a": {"type": "spy"}, "b": {"type": "spy"}})
    ThreadSpy.barrier = threading.Barrier(2)
    try:
        assert run_instance(config, registry).exit_code == 0
        with open(tmp_path / "records.jsonl", "w") as fh:
            for record in records:
                fh.write(json.dumps(record.to_dict()) + "\n")
        spies.clear()
        ThreadSpy.barrier = None
        assert run_instance(config, registry).exit_code == 0
    finally:
        ThreadSpy.barrier = None
    idents = []
    for spy in spies:
        assert set(spy.threads) == {"open", "write", "withdraw", "close"}, spy.threads
        (ident,) = set().union(*spy.threads.values())  # one thread for every hook of the run
        assert ident != threading.get_ident()
        idents.append(ident)
    assert len(set(idents)) == 2, "each sink has its own thread"


def test_the_harness_runs_a_thread_bound_sink_as_the_engine_does(tmp_path):
    harness = SinkHarness(SqliteSink(DbSettings(path=str(tmp_path / "t.sqlite"))), name="db")
    records = make_indicators(3)
    with harness.session():
        assert [o.status for o in harness.write(records)] == ["accepted"] * 3
        assert [o.status for o in harness.withdraw([records[0]])] == ["accepted"]
    assert stored_ids(tmp_path / "t.sqlite") == ["2", "3"]


def test_the_harness_calls_every_hook_of_a_session_on_one_sink_thread():
    spy = ThreadSpy(None)
    harness = SinkHarness(spy, name="spy")
    records = make_indicators(2)
    with harness.session():
        harness.write(records)
        harness.withdraw([records[0]])
    (ident,) = set().union(*spy.threads.values())
    assert set(spy.threads) == {"open", "write", "withdraw", "close"} and ident != threading.get_ident()


def test_sink_thread_reuses_one_thread_and_runs_nested_calls_in_place():
    thread = SinkThread("x")
    first = thread.call(threading.get_ident)
    assert thread.call(threading.get_ident) == first != threading.get_ident()
    assert thread.call(lambda: thread.call(threading.get_ident)) == first  # no deadlock on itself
    thread.stop()
    assert thread.ident is None


class Typo:
    """A sink with a misspelt hook name, as a third party might ship it."""

    def __init__(self, settings: Any) -> None:
        pass

    @hookimpl
    def exportkit_wirte(self, records, context):
        pass


class WrongSignature:
    def __init__(self, settings: Any) -> None:
        pass

    @hookimpl
    def exportkit_write(self, records, context, retries):
        pass


@pytest.mark.parametrize("factory, problem", [(Typo, "exportkit_wirte"), (WrongSignature, "retries")])
def test_a_sink_failing_hook_validation_is_named_and_stops_only_itself(tmp_path, factory, problem):
    good = recording_sink_type("good")
    bad = SinkType("bad", NoSettings, factory)
    config, registry = setup(tmp_path, make_indicators(12), [good, bad], {"good": {}, "bad": {}})
    assert "hook" in registry.invalid_sink("bad") and problem in registry.invalid_sink("bad")
    report = run_instance(config, registry)
    assert report.sinks["good"]["accepted"] == 12 and report.sinks["good"]["error"] is None
    error = report.sinks["bad"]["error"]
    assert "plugin acme (acme-sinks)" in error and problem in error
    assert report.sinks["bad"]["deferred"] == 12
    assert report.exit_code == 3
    assert json.loads(report.path.read_text())["sinks"]["bad"]["error"] == error


class Exploding:
    """Raises a bug-like error from one hook, chosen per test."""

    where = "write"

    def __init__(self, settings: Any) -> None:
        pass

    def _maybe(self, hook: str) -> None:
        if Exploding.where == hook:
            raise KeyError(f"bug in {hook}")

    @hookimpl
    def exportkit_open(self, context):
        self._maybe("open")

    @hookimpl
    def exportkit_write(self, records, context):
        self._maybe("write")
        return BatchResult()

    @hookimpl
    def exportkit_close(self, context, error):
        self._maybe("close")


@pytest.mark.parametrize("where", ["open", "write"])
def test_any_exception_from_a_sink_hook_takes_only_that_sink_out(tmp_path, where):
    Exploding.where = where
    config, registry = setup(tmp_path, make_indicators(12), [recording_sink_type("good"), SinkType("boom", NoSettings, Exploding)], {"good": {}, "boom": {}})
    report = run_instance(config, registry)
    assert report.sinks["good"]["accepted"] == 12
    assert report.sinks["boom"]["deferred"] == 12 and f"{where}: KeyError" in report.sinks["boom"]["error"]
    assert report.exit_code == 3 and report.path.exists()


def test_a_failing_close_is_in_the_report_and_exits_3(tmp_path):
    Exploding.where = "close"
    config, registry = setup(tmp_path, make_indicators(5), [SinkType("boom", NoSettings, Exploding)], {"boom": {}})
    report = run_instance(config, registry)
    sink = report.sinks["boom"]
    assert sink["accepted"] == 5 and "close: KeyError" in sink["error"] and sink["error_kind"] == "close"
    assert report.exit_code == 3
    assert "PARTIAL" in report.summary_text() and "close: KeyError" in report.summary_text()


def test_one_sink_failing_to_open_puts_the_reason_in_the_report_error(tmp_path):
    Exploding.where = "open"
    config, registry = setup(tmp_path, make_indicators(5), [SinkType("boom", NoSettings, Exploding)], {"boom": {}})
    report = run_instance(config, registry)
    assert report.exit_code == 1
    data = json.loads(report.path.read_text())
    assert data["error"] is not None and "boom: open: KeyError" in data["error"]
    with State.open(state_path(tmp_path, "inst")) as state:
        assert state.checkpoint is None
