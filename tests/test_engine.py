"""The engine: fan-out, isolation, outcomes, checkpoint, withdrawal, hooks (real SQLite and files)."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import attrs
import pytest

from exportkit import hookimpl
from exportkit.config import load_instance, write_config
from exportkit.engine import RunOptions, run_instance
from exportkit.errors import TransientError
from exportkit.plugins import PluginRegistry
from exportkit.state import State, state_path
from exportkit.context import SinkType
from exportkit.testing import make_indicators, recording_sink_type
from exportkit.testing.recording import RecordingSettings, RecordingSink


class SinkPlugin:
    """An entry-point-like plugin offering two recording sink types."""

    def __init__(self, **kinds: dict[str, Any]) -> None:
        self.types = {name: recording_sink_type(name, **kwargs) for name, kwargs in kinds.items()}

    @hookimpl
    def exportkit_sink_types(self):
        return list(self.types.values())

    def last(self, name: str):
        return self.types[name].factory.last


class Filter:
    """A cross-cutting plugin: drops low scores, upper-cases values, sees run start and end."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.report: dict | None = None

    @hookimpl
    def exportkit_run_started(self, run):
        self.events.append(f"started {run.mode}")

    @hookimpl
    def exportkit_transform_record(self, record, run):
        if record.score is not None and record.score < 3:
            return False
        return attrs.evolve(record, description="seen by filter")

    @hookimpl
    def exportkit_run_finished(self, run, report):
        self.events.append("finished")
        self.report = report


def setup_instance(folder: Path, records, plugin: SinkPlugin, *, sinks=("a", "b"), extra=None, export=None):
    with open(folder / "records.jsonl", "w") as fh:
        for record in records:
            fh.write(json.dumps(record.to_dict()) + "\n")
    write_config(folder / "inst.toml", {
        "source": {"type": "file", "path": "records.jsonl"},
        "export": {"sinks": list(sinks), "batch_size": 10, **(export or {})},
        "sinks": {name: {} for name in sinks},
    })
    registry = PluginRegistry()
    registry.add("recorders", plugin)
    for name, obj in (extra or {}).items():
        registry.add(name, obj)
    config = load_instance(folder, "inst", registry.sink_types, unavailable_sinks=registry.unavailable)
    return config, registry


def state_of(folder: Path) -> State:
    return State.open(state_path(folder, "inst"))


def test_one_sink_failing_never_stops_the_other_and_holds_the_checkpoint(tmp_path):
    plugin = SinkPlugin(a={"raise_on": 2}, b={})
    records = make_indicators(35)
    config, registry = setup_instance(tmp_path, records, plugin)
    report = run_instance(config, registry)
    a, b = plugin.last("a"), plugin.last("b")
    assert len(b.live) == 35
    assert len(a.live) == 10, "a accepted its first batch, then failed"
    assert report.sinks["a"]["deferred"] == 25 and "injected failure" in report.sinks["a"]["error"]
    assert report.exit_code == 3
    assert a.calls[-1].hook == "close" and a.calls[-1].error is not None
    with state_of(tmp_path) as st:
        assert st.checkpoint.source_id == "10", "the checkpoint stops where sink a stopped"

    # Next run, the fault gone: a gets the rest; b is offered nothing it already holds.
    plugin.types["a"].factory.kwargs["raise_on"] = None
    report = run_instance(config, registry)
    a2, b2 = plugin.last("a"), plugin.last("b")
    assert sorted(a2.written_ids(), key=int) == [str(i) for i in range(11, 36)]
    assert b2.written_ids() == []
    assert report.exit_code == 0
    with state_of(tmp_path) as st:
        assert st.checkpoint.source_id == "35"


def test_transient_error_defers_without_making_the_run_fatal(tmp_path):
    plugin = SinkPlugin(a={"raise_on": 1, "exception": TransientError("target busy")})
    config, registry = setup_instance(tmp_path, make_indicators(5), plugin, sinks=("a",))
    report = run_instance(config, registry)
    assert report.sinks["a"]["error_kind"] == "transient"
    assert report.exit_code == 3


def test_rejected_records_are_dead_lettered_and_confirmed(tmp_path):
    plugin = SinkPlugin(a={"reject": {"3", "4"}})
    config, registry = setup_instance(tmp_path, make_indicators(6), plugin, sinks=("a",))
    report = run_instance(config, registry)
    assert report.exit_code == 3 and report.dead_lettered == 2
    with state_of(tmp_path) as st:
        letters = st.dead_letters("a")
        assert [(d.source_id, d.reason) for d in letters] == [("3", "rejected by test"), ("4", "rejected by test")]
        assert letters[0].record["value"] == make_indicators(6)[2].value
        assert st.checkpoint.source_id == "6", "a rejected record is confirmed: it does not hold the checkpoint"


def test_deferred_record_holds_checkpoint_before_it(tmp_path):
    plugin = SinkPlugin(a={"defer": {"4"}})
    config, registry = setup_instance(tmp_path, make_indicators(8), plugin, sinks=("a",))
    run_instance(config, registry)
    with state_of(tmp_path) as st:
        assert st.checkpoint.source_id == "3"
        assert st.holdings("a").get("4") is None and st.holdings("a").get("5") is not None


def test_expired_records_are_withdrawn_only_where_held(tmp_path):
    plugin = SinkPlugin(a={})
    records = make_indicators(4)
    config, registry = setup_instance(tmp_path, records, plugin, sinks=("a",))
    run_instance(config, registry)
    later = [attrs.evolve(r, status="Expired", updated_at=r.updated_at.replace(year=r.updated_at.year + 1)) for r in records[:2]]
    never_sent = make_indicators(1, start=99, status="Expired")
    config, registry = setup_instance(tmp_path, later + records[2:] + never_sent, plugin, sinks=("a",))
    report = run_instance(config, registry)
    sink = plugin.last("a")
    assert [c.ids for c in sink.calls if c.hook == "withdraw"] == [("1", "2")]
    assert "99" not in sink.written_ids()
    assert report.sinks["a"]["withdrawn"] == 2
    assert report.sinks["a"]["reasons"] == {"expired: never sent": 1}
    with state_of(tmp_path) as st:
        assert st.held_ids("a") == {"3", "4"}


def test_transform_and_run_hooks_of_extra_plugins(tmp_path):
    plugin, filt = SinkPlugin(a={}), Filter()
    records = [attrs.evolve(r, score=float(i % 5)) for i, r in enumerate(make_indicators(10))]
    config, registry = setup_instance(tmp_path, records, plugin, sinks=("a",), extra={"filter": filt}, export={"plugins": ["filter"]})
    report = run_instance(config, registry)
    sink = plugin.last("a")
    kept = [r.source_id for r in records if r.score >= 3]
    assert sorted(sink.live) == sorted(kept)
    assert all(r.description == "seen by filter" for r in sink.live.values())
    assert report.filtered == len(records) - len(kept)
    assert filt.events == ["started incremental", "finished"]
    assert filt.report["run_id"] == report.run_id


def test_dry_run_calls_sinks_in_dry_run_and_stores_nothing(tmp_path):
    plugin = SinkPlugin(a={})
    config, registry = setup_instance(tmp_path, make_indicators(5), plugin, sinks=("a",))
    report = run_instance(config, registry, RunOptions(dry_run=True))
    sink = plugin.last("a")
    assert all(c.dry_run for c in sink.calls)
    assert report.sinks["a"]["accepted"] == 5
    with state_of(tmp_path) as st:
        assert st.checkpoint is None and st.held_ids("a") == set() and st.runs() == []


def test_reconcile_withdraws_what_left_the_collection(tmp_path):
    plugin = SinkPlugin(a={})
    records = make_indicators(6)
    config, registry = setup_instance(tmp_path, records, plugin, sinks=("a",))
    run_instance(config, registry)
    config, registry = setup_instance(tmp_path, records[:4], plugin, sinks=("a",))
    report = run_instance(config, registry, RunOptions(reconcile=True))
    assert report.reconcile["removed"] == 2
    assert [c.ids for c in plugin.last("a").calls if c.hook == "withdraw"] == [("5", "6")]
    with state_of(tmp_path) as st:
        assert st.held_ids("a") == {"1", "2", "3", "4"}
        assert st.last_reconcile is not None


def test_scheduled_reconcile_runs_only_when_due(tmp_path):
    plugin = SinkPlugin(a={})
    config, registry = setup_instance(tmp_path, make_indicators(3), plugin, sinks=("a",), export={"reconcile_every": "1h"})
    first = run_instance(config, registry).reconcile
    assert first == {"ran": False, "skipped": "no sink held anything before this run"}, "a first run has nothing to reconcile"
    assert run_instance(config, registry).reconcile["ran"] is False, "the schedule started with the first run"
    with state_of(tmp_path) as st:
        st.set_last_reconcile(st.last_reconcile - timedelta(hours=2))
    assert run_instance(config, registry).reconcile["ran"] is True
    assert run_instance(config, registry).reconcile["ran"] is False


def test_reconcile_reads_ids_with_a_progress_line_of_its_own(tmp_path):
    plugin = SinkPlugin(a={})
    records = make_indicators(2500)
    config, registry = setup_instance(tmp_path, records, plugin, sinks=("a",), export={"batch_size": 1000})
    run_instance(config, registry)
    seen: list = []
    report = run_instance(config, registry, RunOptions(reconcile=True, progress=lambda p: seen.append((p.stage, p.done))))
    assert report.reconcile["in_collection"] == 2500
    assert [s for s in seen if s[0] == "reconcile"] == [("reconcile", 1000), ("reconcile", 2000), ("reconcile", 2500)]


def test_sink_whose_open_fails_is_not_closed_and_defers(tmp_path):
    plugin = SinkPlugin(a={"raise_on": 1, "raise_in": ("open",)}, b={})
    config, registry = setup_instance(tmp_path, make_indicators(3), plugin)
    report = run_instance(config, registry)
    assert plugin.last("a").hooks() == ["open"]
    assert report.sinks["a"]["deferred"] == 3 and report.sinks["b"]["accepted"] == 3
    assert report.exit_code == 3


def test_every_sink_failing_for_good_is_fatal_and_nothing_is_pulled(tmp_path):
    plugin = SinkPlugin(a={"raise_on": 1, "raise_in": ("open",)})
    config, registry = setup_instance(tmp_path, make_indicators(3), plugin, sinks=("a",))
    report = run_instance(config, registry)
    assert report.exit_code == 1
    assert report.pulled == 0, "pulling would only defer every record"


def test_stop_request_ends_after_the_current_batch(tmp_path):
    plugin = SinkPlugin(a={})
    config, registry = setup_instance(tmp_path, make_indicators(30), plugin, sinks=("a",))
    report = run_instance(config, registry, RunOptions(should_stop=lambda: True))
    assert len(plugin.last("a").live) == 10
    assert report.exit_code == 3 and "stopped on request" in report.error
    with state_of(tmp_path) as st:
        assert st.checkpoint.source_id == "10"


@pytest.mark.parametrize("bad", ["not json", '{"source_id": "9"}'])
def test_source_dead_letters_do_not_stop_the_run(tmp_path, bad):
    plugin = SinkPlugin(a={})
    config, registry = setup_instance(tmp_path, make_indicators(3), plugin, sinks=("a",))
    with open(tmp_path / "records.jsonl", "a") as fh:
        fh.write(bad + "\n")
    report = run_instance(config, registry)
    assert report.bad == 1 and len(plugin.last("a").live) == 3



class LookingSink(RecordingSink):
    """A recording sink that also looks up what it holds for every record, as the CTIA sink does."""

    def __init__(self, settings: Any = None) -> None:
        super().__init__()
        self.seen: dict[str, Any] = {}

    @hookimpl
    def exportkit_write(self, records, context):
        for record in records:
            self.seen[record.source_id] = context.held(record)
        return super().exportkit_write(records, context)


class LookingPlugin(SinkPlugin):
    def __init__(self) -> None:
        self.sinks: list[LookingSink] = []
        self.types = {"a": SinkType("a", RecordingSettings, lambda s: self.sinks.append(LookingSink(s)) or self.sinks[-1])}


def test_holdings_are_read_once_per_batch_and_sinks_look_up_from_memory(tmp_path, monkeypatch):
    plugin = LookingPlugin()
    records = make_indicators(30)
    config, registry = setup_instance(tmp_path, records, plugin, sinks=("a",))
    run_instance(config, registry)
    changed = [attrs.evolve(r, description="changed", updated_at=r.updated_at.replace(year=r.updated_at.year + 1)) for r in records]
    config, registry = setup_instance(tmp_path, changed, plugin, sinks=("a",))
    reads: list[str] = []
    real = State._execute

    def counting(self, sql, params=()):
        if "FROM holdings" in sql:
            reads.append(sql)
        return real(self, sql, params)

    monkeypatch.setattr(State, "_execute", counting)
    run_instance(config, registry)
    assert all(plugin.sinks[-1].seen[r.source_id] is not None for r in changed), "the sink saw what it holds"
    assert len([sql for sql in reads if "LIMIT 1" not in sql]) == 3, "one holdings query per batch of 10, none per record"
