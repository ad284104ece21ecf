"""Run hooks and transforms go through pluggy (wrappers, ordering, tracing) and their failures are contained."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import attrs
import pytest

from exportkit import hookimpl
from exportkit.config import load_instance, write_config
from exportkit.engine import run_instance
from exportkit.plugins import PluginRegistry
from exportkit.state import SOURCE_SINK, State, state_path
from exportkit.testing import make_indicators, recording_sink_type


class Sinks:
    def __init__(self) -> None:
        self.type = recording_sink_type("rec")

    @hookimpl
    def exportkit_sink_types(self):
        return [self.type]


def setup(folder: Path, plugins: dict[str, Any], count: int = 12):
    with open(folder / "records.jsonl", "w") as fh:
        for record in make_indicators(count):
            fh.write(json.dumps(record.to_dict()) + "\n")
    write_config(folder / "inst.toml", {
        "source": {"type": "file", "path": "records.jsonl"},
        "export": {"sinks": ["rec"], "batch_size": 5, "plugins": list(plugins)},
        "sinks": {"rec": {}},
    })
    sinks = Sinks()
    registry = PluginRegistry()
    registry.add("sinks", sinks)
    for name, obj in plugins.items():
        registry.add(name, obj, distribution=f"dist-{name}", version="1.0")
    return load_instance(folder, "inst", registry.sink_types, unavailable_sinks=registry.unavailable), registry, sinks


def test_a_wrapper_run_started_runs_around_the_plain_ones(tmp_path):
    events: list[str] = []

    class Wrapper:
        @hookimpl(wrapper=True)
        def exportkit_run_started(self, run):
            events.append("before")
            yield
            events.append("after")

    class Plain:
        @hookimpl
        def exportkit_run_started(self, run):
            events.append("plain")

    config, registry, _ = setup(tmp_path, {"wrap": Wrapper(), "plain": Plain()})
    assert run_instance(config, registry).exit_code == 0
    assert events == ["before", "plain", "after"]


def test_transforms_chain_in_pluggy_order_with_tryfirst_and_wrappers(tmp_path):
    seen: list[str] = []

    class First:
        @hookimpl(tryfirst=True)
        def exportkit_transform_record(self, record, run):
            seen.append("first")
            return attrs.evolve(record, description="first")

    class Second:
        @hookimpl
        def exportkit_transform_record(self, record, run):
            seen.append(f"second saw {record.description}")
            return attrs.evolve(record, description=record.description + "+second")

    class Around:
        @hookimpl(wrapper=True)
        def exportkit_transform_record(self, record, run):
            seen.append("wrap")
            return (yield)

    # "first" is registered before "second": only tryfirst can put it first.
    config, registry, sinks = setup(tmp_path, {"first": First(), "second": Second(), "around": Around()}, count=1)
    assert run_instance(config, registry).exit_code == 0
    assert seen == ["wrap", "first", "wrap", "second saw first"]
    (record,) = sinks.type.factory.last.live.values()
    assert record.description == "first+second"


def test_a_transform_that_raises_dead_letters_that_record_only_with_the_plugin_name(tmp_path):
    class Picky:
        @hookimpl
        def exportkit_transform_record(self, record, run):
            if record.source_id == "7":
                raise RuntimeError("cannot handle 7")
            return None

    config, registry, sinks = setup(tmp_path, {"picky": Picky()})
    report = run_instance(config, registry)
    assert sorted(sinks.type.factory.last.live, key=int) == [str(i) for i in range(1, 13) if i != 7]
    assert report.dead_lettered_new == 1 and report.exit_code == 3
    assert report.plugin_errors == [{"hook": "exportkit_transform_record", "plugin": "picky", "error": "RuntimeError: cannot handle 7"}]
    with State.open(state_path(tmp_path, "inst")) as state:
        (letter,) = state.dead_letters(SOURCE_SINK)
        assert letter.source_id == "7" and "picky" in letter.reason and "cannot handle 7" in letter.reason
        assert letter.record["source_id"] == "7"
        assert state.checkpoint.source_id == "12"


def test_a_transform_changing_source_id_dead_letters_the_record(tmp_path):
    class Renamer:
        @hookimpl
        def exportkit_transform_record(self, record, run):
            return attrs.evolve(record, source_id="x" + record.source_id) if record.source_id == "3" else None

    config, registry, sinks = setup(tmp_path, {"renamer": Renamer()})
    report = run_instance(config, registry)
    assert "3" not in sinks.type.factory.last.live and len(sinks.type.factory.last.live) == 11
    with State.open(state_path(tmp_path, "inst")) as state:
        (letter,) = state.dead_letters(SOURCE_SINK)
        assert "renamer" in letter.reason and "source_id" in letter.reason
    assert report.exit_code == 3


@pytest.mark.parametrize("hook", ["exportkit_run_started", "exportkit_run_finished"])
def test_a_failing_run_hook_is_logged_and_reported_and_the_run_goes_on(tmp_path, hook, caplog):
    class Noisy:
        pass

    def fail(self, run, report=None):
        raise ValueError("notification service down")

    fail.__name__ = hook
    setattr(Noisy, hook, hookimpl(fail) if hook == "exportkit_run_started" else hookimpl(lambda self, run, report: fail(self, run, report)))
    config, registry, sinks = setup(tmp_path, {"noisy": Noisy()})
    with caplog.at_level(logging.ERROR, logger="exportkit"):
        report = run_instance(config, registry)
    assert len(sinks.type.factory.last.live) == 12
    expected = {"hook": hook, "plugin": "noisy", "error": "ValueError: notification service down"}
    assert report.plugin_errors == [expected] and report.exit_code == 3
    assert json.loads(report.path.read_text())["plugin_errors"] == [expected]
    assert any("noisy" in r.getMessage() and hook in r.getMessage() for r in caplog.records)


def test_trace_hooks_sees_run_hooks_and_transforms(tmp_path, monkeypatch, caplog):
    class Both:
        @hookimpl
        def exportkit_run_started(self, run):
            pass

        @hookimpl
        def exportkit_transform_record(self, record, run):
            return None

    monkeypatch.setenv("EXPORTKIT_TRACE_HOOKS", "1")
    config, registry, _ = setup(tmp_path, {"both": Both()}, count=2)
    with caplog.at_level(logging.DEBUG, logger="exportkit"):
        assert run_instance(config, registry).exit_code == 0
    traced = [r.getMessage() for r in caplog.records if r.getMessage().startswith("hook ")]
    assert any("exportkit_run_started" in line and "both" in line for line in traced), traced
    assert sum("exportkit_transform_record" in line for line in traced) == 2
    assert any("exportkit_write" in line for line in traced)


def test_a_bug_outside_every_plugin_still_writes_the_report_and_exits_1(tmp_path, monkeypatch):
    config, registry, _ = setup(tmp_path, {})

    def broken(*args: Any, **kwargs: Any) -> None:
        raise ZeroDivisionError("engine bug")

    monkeypatch.setattr("exportkit.reconcile.Reconcile.due", broken)
    report = run_instance(config, registry)
    assert report.exit_code == 1
    data = json.loads(report.path.read_text())
    assert data["error"] == "ZeroDivisionError: engine bug" and data["report_version"] == 1


def test_a_secret_in_a_plugin_error_reaches_neither_report_nor_log_nor_dead_letter(tmp_path, caplog):
    from exportkit.secrets import register

    secret = "tq-client-secret-7731"
    register(secret)

    class Leaky:
        @hookimpl
        def exportkit_transform_record(self, record, run):
            if record.source_id == "2":
                raise RuntimeError(f"login with {secret} failed")
            return None

    config, registry, _ = setup(tmp_path, {"leaky": Leaky()}, count=3)
    with caplog.at_level(logging.DEBUG, logger="exportkit"):
        report = run_instance(config, registry)
    assert secret not in report.path.read_text()
    assert secret not in caplog.text
    with State.open(state_path(tmp_path, "inst")) as state:
        (letter,) = state.dead_letters(SOURCE_SINK)
        assert secret not in letter.reason and "***" in letter.reason
