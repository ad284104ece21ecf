"""The intent log: a change or withdrawal cut short between two steps is finished by the next open."""

from __future__ import annotations

import attrs
import pytest

from exportkit.context import Holding
from exportkit.results import Withdrawal
from exportkit_ctia.intents import INTENTS_KEY, generation_key

pytestmark = pytest.mark.integration


def crashed(h, hook: str, items) -> None:
    """Open and call one hook, then stop as a killed process would: no outcome recorded, no close."""
    context = h.context()
    h.sink.exportkit_open(context)
    getattr(h.sink, hook)(items, context)


def live_for(ctia, value: str) -> list[dict]:
    return ctia.live_judgements("ip", value)


def test_intents_are_on_disk_before_the_bundle_goes_out(ctia, harness, record):
    h = harness(attempts=1)
    r = record("192.0.2.50")
    h.run([r])
    changed = attrs.evolve(r, score=2)
    ctia.faults.fail_next(503, count=5, path_prefix="/ctia/bundle")
    crashed(h, "exportkit_write", [changed])
    (intent,) = h.store.get(INTENTS_KEY)
    assert intent["kind"] == "change" and intent["source_id"] == r.source_id
    assert intent["previous"] == h.holdings[r.source_id].remote["judgement_id"]
    assert intent["judgement"]["external_ids"][0] == intent["xid"]


def test_a_change_never_recorded_is_finished_even_when_the_indicator_changed_again(ctia, harness, record):
    h = harness()
    v1 = record("192.0.2.51", score=1)
    h.run([v1])
    # Killed after the bundle answer and the expiry of v1's judgement, before the holding was written.
    crashed(h, "exportkit_write", [attrs.evolve(v1, score=2)])
    assert h.holdings[v1.source_id].content_hash == v1.content_hash
    # Changed again before the next run: its XID differs from the unrecorded judgement's.
    v3 = attrs.evolve(v1, score=3)
    h.run([v3])
    (live,) = live_for(ctia, "192.0.2.51")
    assert "score 3" in live["reason"]
    assert h.holdings[v1.source_id].remote["judgement_id"] == live["id"]
    assert h.reports[-1]["judgements"]["recovered_exists"] == 1
    assert h.store.get(INTENTS_KEY) == []


def test_a_change_whose_record_moved_on_has_its_judgement_expired(ctia, harness, record):
    h = harness()
    v1 = record("192.0.2.52", score=1)
    h.run([v1])
    crashed(h, "exportkit_write", [attrs.evolve(v1, score=2)])
    (unrecorded,) = [j for j in live_for(ctia, "192.0.2.52") if "score 2" in j["reason"]]
    # Something later holds a third judgement for the record: the unrecorded one must not stay live.
    other = "http://127.0.0.1/ctia/judgement/judgement-00000000-0000-4000-8000-000000000000"
    h.holdings[v1.source_id] = Holding("elsewhere", {"judgement_id": other, "xid": "x", "generation": 5})
    h.run([])
    assert unrecorded["id"] not in {j["id"] for j in ctia.live_judgements()}
    assert h.store.get(INTENTS_KEY) == []


def test_a_withdrawal_cut_short_is_finished_at_open(ctia, harness, record):
    h = harness()
    r = record("192.0.2.53")
    h.run([r])
    crashed(h, "exportkit_withdraw", [Withdrawal(r.source_id, "removed", None)])
    assert live_for(ctia, "192.0.2.53") == [] and r.source_id in h.holdings
    h.run([])
    assert r.source_id not in h.holdings, "the holding of an expired judgement is forgotten"
    assert h.store.get(generation_key(r.source_id)) == 1
    h.run([r])  # it comes back: a new judgement, not the expired one
    (live,) = live_for(ctia, "192.0.2.53")
    assert h.holdings[r.source_id].remote["generation"] == 1


def test_settled_intents_leave_the_log(ctia, harness, record):
    h = harness()
    records = [record(f"192.0.2.{i}") for i in range(60, 65)]
    h.run(records)
    h.run([attrs.evolve(r, score=1) for r in records[:2]], [Withdrawal(records[4].source_id, "removed", None)])
    h.run([])
    assert h.store.get(INTENTS_KEY) == []
    assert h.reports[-1].get("unfinished_intents") is None
