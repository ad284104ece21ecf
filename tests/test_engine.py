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


class NamespaceProbe:
    """A sink type whose sinks remember the namespace their context carried."""

    seen: list[str] = []

    def __init__(self, settings: Any) -> None:
        pass

    @hookimpl
    def exportkit_open(self, context):
        NamespaceProbe.seen.append(context.namespace)

    @hookimpl
    def exportkit_sink_types(self):
        from exportkit import SinkType

        return [SinkType("probe", attrs.make_class("ProbeSettings", {}), NamespaceProbe)]


def test_sinks_get_a_namespace_naming_the_instance_and_what_it_exports(tmp_path):
    NamespaceProbe.seen = []
    registry = PluginRegistry()
    registry.add("probe", NamespaceProbe(None))
    (tmp_path / "records.jsonl").write_text("")
    for name, path in (("east", "a.jsonl"), ("west", "a.jsonl"), ("east", "b.jsonl")):
        write_config(tmp_path / f"{name}.toml", {
            "source": {"type": "file", "path": path}, "export": {"sinks": ["probe"]}, "sinks": {"probe": {}},
        })
        (tmp_path / path).write_text("")
        run_instance(load_instance(tmp_path, name, registry.sink_types, unavailable_sinks=registry.unavailable), registry)
    first, other_instance, other_source = NamespaceProbe.seen
    assert "east" in first and "a.jsonl" in first
    assert len({first, other_instance, other_source}) == 3
    # Stable: the same instance exporting the same thing gets the same namespace next run.
    run_instance(load_instance(tmp_path, "east", registry.sink_types, unavailable_sinks=registry.unavailable), registry)
    assert NamespaceProbe.seen[-1] == other_source


class VerifyingSink:
    """A sink type whose sinks hold every record and, on verify, 'repair' the ids listed in ``stale``."""

    stale: set[str] = set()
    verified: list[str] = []
    #: source id -> (status, reason) for verify outcomes other than a repair
    trouble: dict[str, tuple[str, str]] = {}

    def __init__(self, settings: Any) -> None:
        pass

    @hookimpl
    def exportkit_write(self, records, context):
        from exportkit import BatchResult

        result = BatchResult()
        for record in records:
            result.accept(record, remote={"n": 1})
        return result

    @hookimpl
    def exportkit_verify(self, source_ids, context):
        from exportkit import BatchResult

        VerifyingSink.verified += list(source_ids)
        result = BatchResult()
        for sid in source_ids:
            if sid in VerifyingSink.stale:
                result.accept(sid, remote={"n": 2})
            elif sid in VerifyingSink.trouble:
                status, reason = VerifyingSink.trouble[sid]
                getattr(result, {"rejected": "reject", "deferred": "defer"}[status])(sid, reason)
        return result

    @hookimpl
    def exportkit_sink_types(self):
        from exportkit import SinkType

        return [SinkType("verifier", attrs.make_class("VerifierSettings", {}), VerifyingSink)]


def test_reconcile_asks_sinks_to_verify_what_they_hold_and_keeps_their_repairs(tmp_path):
    VerifyingSink.stale, VerifyingSink.verified = {"2", "4"}, []
    registry = PluginRegistry()
    registry.add("verifier", VerifyingSink(None))
    records = make_indicators(6)
    with open(tmp_path / "records.jsonl", "w") as fh:
        for record in records[:5]:
            fh.write(json.dumps(record.to_dict()) + "\n")
    write_config(tmp_path / "inst.toml", {
        "source": {"type": "file", "path": "records.jsonl"}, "export": {"sinks": ["verifier"], "batch_size": 2, "reconcile_every": "0"}, "sinks": {"verifier": {}},
    })
    config = load_instance(tmp_path, "inst", registry.sink_types, unavailable_sinks=registry.unavailable)
    run_instance(config, registry)
    assert VerifyingSink.verified == []  # no reconcile asked for, none scheduled
    with state_of(tmp_path) as st:  # the sink also holds a record the collection no longer has
        st.put_holdings("verifier", [("6", records[5].content_hash, {"n": 1})])
    report = run_instance(config, registry, RunOptions(reconcile=True))
    assert sorted(VerifyingSink.verified) == ["1", "2", "3", "4", "5"]  # withdrawn "6" is not verified
    assert report.reconcile["verified"] == {"verifier": 5} and report.reconcile["repaired"] == {"verifier": 2}
    with state_of(tmp_path) as st:
        held = st.holdings("verifier").get_many(["1", "2", "4"])
        assert {sid: h.remote for sid, h in held.items()} == {"1": {"n": 1}, "2": {"n": 2}, "4": {"n": 2}}
        assert held["2"].content_hash == records[1].content_hash


def test_reconcile_verifies_at_most_the_configured_sample(tmp_path):
    VerifyingSink.stale, VerifyingSink.verified = set(), []
    registry = PluginRegistry()
    registry.add("verifier", VerifyingSink(None))
    with open(tmp_path / "records.jsonl", "w") as fh:
        for record in make_indicators(20):
            fh.write(json.dumps(record.to_dict()) + "\n")
    write_config(tmp_path / "inst.toml", {
        "source": {"type": "file", "path": "records.jsonl"},
        "export": {"sinks": ["verifier"], "batch_size": 4, "verify_sample": 7}, "sinks": {"verifier": {}},
    })
    config = load_instance(tmp_path, "inst", registry.sink_types, unavailable_sinks=registry.unavailable)
    report = run_instance(config, registry, RunOptions(reconcile=True))
    assert len(VerifyingSink.verified) == len(set(VerifyingSink.verified)) == 7
    assert report.reconcile["verified"] == {"verifier": 7}


@pytest.mark.parametrize("status", ["rejected", "deferred"])
def test_a_verdict_verification_could_not_make_live_makes_the_run_partial(tmp_path, status):
    VerifyingSink.stale, VerifyingSink.verified = set(), []
    VerifyingSink.trouble = {"3": (status, "the held object is gone from the target")}
    registry = PluginRegistry()
    registry.add("verifier", VerifyingSink(None))
    with open(tmp_path / "records.jsonl", "w") as fh:
        for record in make_indicators(4):
            fh.write(json.dumps(record.to_dict()) + "\n")
    write_config(tmp_path / "inst.toml", {
        "source": {"type": "file", "path": "records.jsonl"},
        "export": {"sinks": ["verifier"], "reconcile_every": "0"}, "sinks": {"verifier": {}},
    })
    config = load_instance(tmp_path, "inst", registry.sink_types, unavailable_sinks=registry.unavailable)
    assert run_instance(config, registry).exit_code == 0
    report = run_instance(config, registry, RunOptions(reconcile=True))
    VerifyingSink.trouble = {}
    assert report.exit_code == 3
    assert report.reconcile["unrepaired"] == {"verifier": 1} and report.reconcile["complete"] is (status != "deferred")


def test_reconcile_that_could_not_read_every_id_withdraws_nothing(tmp_path, monkeypatch):
    from exportkit.file_source import FileSource
    from exportkit.sources import IncompleteRead

    plugin = SinkPlugin(a={})
    records = make_indicators(6)
    config, registry = setup_instance(tmp_path, records, plugin, sinks=("a",))
    run_instance(config, registry)
    with state_of(tmp_path) as st:
        reconciled_before = st.last_reconcile

    def partial(self):
        yield from ("1", "2")
        raise IncompleteRead("read 2 ids of the 6 that the source says it holds", read=2, total=6)

    monkeypatch.setattr(FileSource, "current_ids", partial)
    report = run_instance(config, registry, RunOptions(reconcile=True))
    assert not [c for c in plugin.last("a").calls if c.hook == "withdraw"]
    assert report.reconcile == {"ran": False, "refused": "read 2 ids of the 6 that the source says it holds", "read": 2, "in_collection": 6}
    assert report.exit_code == 3
    assert "reconcile refused, nothing withdrawn: read 2 ids of the 6" in report.summary_text()
    with state_of(tmp_path) as st:
        assert st.held_ids("a") == {"1", "2", "3", "4", "5", "6"}
        assert st.last_reconcile == reconciled_before  # not done: the next run tries again


def test_window_ends_at_the_source_clock_when_it_has_one(tmp_path, monkeypatch):
    from datetime import datetime, timedelta, timezone

    from exportkit.file_source import FileSource

    plugin = SinkPlugin(a={})
    config, registry = setup_instance(tmp_path, make_indicators(3), plugin, sinks=("a",))
    ahead = datetime.now(timezone.utc) + timedelta(minutes=2)
    monkeypatch.setattr(FileSource, "now", lambda self: ahead, raising=False)
    report = run_instance(config, registry)
    assert report.window["until"] == ahead
    assert 115 <= report.window["source_clock_offset_s"] <= 121
    assert "its clock is 1" in report.summary_text() and "s ahead of this host's" in report.summary_text()
    monkeypatch.setattr(FileSource, "now", lambda self: None, raising=False)  # no clock yet: this host's
    report = run_instance(config, registry)
    assert report.window["until"] == report.started
    assert "source_clock_offset_s" not in report.window
