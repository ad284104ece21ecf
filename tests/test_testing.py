"""The sink authors' kit itself: factories, the recording sink, the harness, the contract."""

from __future__ import annotations

import pytest

from exportkit import BatchResult, ConfigError, Outcome, SinkError, Withdrawal, hookimpl
from exportkit.records import Indicator
from exportkit.testing import (
    FIXED_TIME,
    Call,
    MemoryHoldings,
    MemoryStore,
    RecordingSink,
    SinkContract,
    SinkHarness,
    make_indicator,
    make_indicators,
    recording_sink_type,
)


# --- factories -------------------------------------------------------------------


def test_make_indicator_defaults():
    record = make_indicator()
    assert isinstance(record, Indicator)
    assert (record.type, record.status, record.tlp, record.score, record.updated_at) == ("ip", "Active", "amber", 7.5, FIXED_TIME)
    assert Indicator.from_dict(record.to_dict()) == record


def test_make_indicator_overrides_and_type_follows_type_name():
    record = make_indicator(type_name="FQDN", value="evil.example", status="Expired", source_id=9)
    assert record.type == "domain" and record.status == "Expired" and record.source_id == "9"
    assert record.link.endswith("/indicators/9/details")
    assert make_indicator(type="other", type_name="IP Address").type == "other"


def test_make_indicators_unique_ids_values_and_order():
    records = make_indicators(300, start=5)
    assert [r.source_id for r in records[:3]] == ["5", "6", "7"]
    assert len({r.source_id for r in records}) == len({r.value for r in records}) == 300
    assert sorted(records, key=lambda r: r.position) == records


def test_make_indicators_callable_overrides():
    records = make_indicators(2, value=lambda i: f"h{i}.example", type_name="FQDN", score=3)
    assert [r.value for r in records] == ["h1.example", "h2.example"] and {r.score for r in records} == {3.0}


# --- recording sink ----------------------------------------------------------------


def test_recording_sink_records_every_call_and_answers_as_told():
    sink = RecordingSink(reject={"2"}, defer={"3"}, skip={"4"})
    h = SinkHarness(sink, name="rec")
    with h.session():
        outcomes = h.write(make_indicators(5))
        withdrawn = h.withdraw(["1"])
    assert sink.hooks() == ["open", "write", "withdraw", "close"]
    assert sink.calls[1] == Call("write", ("1", "2", "3", "4", "5"))
    assert [o.status for o in outcomes] == ["accepted", "rejected", "deferred", "skipped", "accepted"]
    assert outcomes[0].remote == {"id": "remote-1"} and outcomes[1].reason == "rejected by test"
    assert [o.status for o in withdrawn] == ["accepted"]
    assert sorted(sink.live) == ["5"]
    assert sink.written_ids() == ["1", "2", "3", "4", "5"]


def test_recording_sink_raises_on_the_nth_call():
    sink = RecordingSink(raise_on=2)
    h = SinkHarness(sink)
    h.open()
    h.write(make_indicators(1))
    with pytest.raises(SinkError, match="call 2"):
        h.write(make_indicators(1, start=2))
    h.close(None)
    assert sink.hooks() == ["open", "write", "write", "close"]


def test_recording_sink_raises_a_given_exception_in_a_given_hook():
    sink = RecordingSink(raise_on=1, raise_in={"open"}, exception=TimeoutError("down"))
    with pytest.raises(TimeoutError):
        SinkHarness(sink).open()


def test_recording_sink_type_parses_settings_and_keeps_instances():
    sink_type = recording_sink_type("rec")
    h = SinkHarness.from_type(sink_type, {"reject": ["1"], "raise_on": 3})
    assert sink_type.factory.last is h.sink and sink_type.factory.instances == [h.sink]
    assert h.sink.reject == {"1"} and h.sink.raise_on == 3 and h.name == "rec"
    assert [o.status for o in h.send(make_indicators(2))] == ["rejected", "accepted"]


def test_recording_sink_type_keyword_arguments_win():
    sink_type = recording_sink_type(defer={"1"})
    h = SinkHarness.from_type(sink_type, {"defer": ["2"]})
    assert h.sink.defer == {"1"}


# --- harness -----------------------------------------------------------------------


def test_harness_applies_outcomes_like_the_engine():
    sink = RecordingSink(reject={"2"}, defer={"3"})
    h = SinkHarness(sink)
    records = make_indicators(3)
    with h.session():
        h.write(records)
        assert h.held("1").content_hash == records[0].content_hash and h.held("1").remote == {"id": "remote-1"}
        assert h.held("2") is None and h.dead_letters == {"2": "rejected by test"}
        assert h.held("3") is None and "3" not in h.dead_letters
        assert h.pending(records) == records[1:]  # what the engine would send again
        h.withdraw([Withdrawal("1", "removed")])
    assert h.held("1") is None
    assert [(hook, o.source_id) for hook, o in h.outcomes] == [
        ("exportkit_write", "1"),
        ("exportkit_write", "2"),
        ("exportkit_write", "3"),
        ("exportkit_withdraw", "1"),
    ]


def test_accepting_a_record_clears_its_dead_letter():
    sink = RecordingSink(reject={"1"})
    h = SinkHarness(sink)
    h.write(make_indicators(1))
    sink.reject.clear()
    h.write(make_indicators(1))
    assert h.dead_letters == {} and h.held("1") is not None


def test_harness_never_sends_an_empty_batch():
    sink = RecordingSink()
    h = SinkHarness(sink)
    assert h.write([]) == [] and h.withdraw([]) == []
    assert sink.calls == []


def test_harness_dry_run_changes_no_holdings():
    sink = RecordingSink(reject={"2"})
    h = SinkHarness(sink, dry_run=True)
    h.send(make_indicators(2))
    assert h.context.dry_run and h.holdings.data == {} and h.dead_letters == {}
    assert all(c.dry_run for c in sink.calls) and sink.live == {}


def test_harness_context_carries_settings_proxies_and_time():
    h = SinkHarness(RecordingSink(), name="x", settings={"a": 1}, proxies={"https": "http://p:3128"})
    assert h.context.sink == "x" and h.context.settings == {"a": 1}
    assert h.context.proxies == {"https": "http://p:3128"} and h.context.now == FIXED_TIME
    assert h.check() == ["recording sink: nothing to check"]


def test_session_closes_with_the_error():
    sink = RecordingSink()
    h = SinkHarness(sink)
    with pytest.raises(KeyError):
        with h.session():
            raise KeyError("boom")
    assert isinstance(sink.calls[-1].error, KeyError) and h.closed


def test_from_type_lists_every_settings_problem():
    with pytest.raises(ConfigError) as info:
        SinkHarness.from_type(recording_sink_type("rec"), {"rejec": ["1"], "raise_on": 0})
    assert sorted(p.key for p in info.value.problems) == ["sinks.rec.raise_on", "sinks.rec.rejec"]


class Sloppy:
    """A sink that breaks the outcome rules in chosen ways."""

    def __init__(self, mode):
        self.mode = mode

    @hookimpl
    def exportkit_write(self, records, context):
        if self.mode == "unknown":
            return BatchResult([Outcome("nope", "accepted")])
        if self.mode == "no-reason":
            return BatchResult([Outcome(records[0].source_id, "rejected")])
        if self.mode == "remote":
            return BatchResult([Outcome(records[0].source_id, "accepted", remote={"when": object()})])
        return ["not a result"]


@pytest.mark.parametrize(
    ("mode", "message"),
    [("unknown", "not in the batch"), ("no-reason", "has no reason"), ("remote", "not JSON"), ("wrong", "expected a BatchResult")],
)
def test_harness_checks_what_the_engine_relies_on(mode, message):
    with pytest.raises(AssertionError, match=message):
        SinkHarness(Sloppy(mode)).write(make_indicators(1))


def test_memory_store_and_holdings_go_through_json():
    store = MemoryStore({"a": [1, 2]})
    assert store.get("a") == [1, 2] and store.get("b", 0) == 0
    with pytest.raises(TypeError):
        store.set("bad", object())
    store.delete("a")
    assert store.get("a") is None
    holdings = MemoryHoldings()
    holdings.put("1", "h", {"k": (1, 2)})
    assert holdings.get("1").remote == {"k": [1, 2]}  # as the state database returns it
    assert holdings.get_many(["1", "2"]) == {"1": holdings.get("1")}
    holdings.drop("1")
    assert holdings.get("1") is None


# --- the contract suite checks itself -------------------------------------------------


def _instances_with(harness, targets):
    """Every sink object made by the factory that made ``harness.sink`` (one target)."""
    for sink_type in targets.values():
        if harness.sink in sink_type.factory.instances:
            return sink_type.factory.instances
    raise AssertionError("unknown sink")


class TestRecordingSinkContract(SinkContract):
    """The recording sink passes the contract; its target is the ``live`` dicts of one factory's sinks."""

    rejects_record = {"source_id": "999"}
    bad_settings = {"raise_on": 0, "skip": 5}
    bad_settings_problems = 2
    targets: dict = {}

    def sink_setup(self, tmp_path):
        # one sink type per tmp_path, so that a second sink object sees the same target
        return self.targets.setdefault(str(tmp_path), recording_sink_type("rec", reject={"999"})), {}

    def read_back(self, harness):
        live: dict = {}
        for sink in _instances_with(harness, self.targets):
            live.update(sink.live)
        return list(live)


def test_contract_fails_when_an_attribute_is_undeclared(tmp_path):
    class Undeclared(SinkContract):
        def sink_setup(self, tmp_path):
            return recording_sink_type(), {}

        def read_back(self, harness):
            return None

    with pytest.raises(AssertionError, match="must declare rejects_record"):
        Undeclared().test_partial_rejection_is_reported_per_record(tmp_path)
    with pytest.raises(AssertionError, match="must declare bad_settings"):
        Undeclared().test_settings_problems_are_listed_at_once(tmp_path)


def test_contract_catches_a_target_that_duplicates_on_resend(tmp_path):
    class Appending(TestRecordingSinkContract):
        targets: dict = {}

        def read_back(self, harness):
            # a target that stores every write again
            return [i for sink in _instances_with(harness, self.targets) for i in sink.written_ids()]

    with pytest.raises(AssertionError):
        Appending().test_resending_a_batch_creates_nothing_new(tmp_path)


def test_contract_catches_a_sink_that_defers(tmp_path):
    class Deferring(TestRecordingSinkContract):
        targets: dict = {}

        def sink_setup(self, tmp_path):
            return self.targets.setdefault(str(tmp_path), recording_sink_type("rec", defer={"2"})), {}

    with pytest.raises(AssertionError, match="not delivered"):
        Deferring().test_write_delivers_every_record(tmp_path)
