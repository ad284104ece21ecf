"""Reconcile repair: held judgements that are no longer live are re-created, read in bulk, without the records."""

from __future__ import annotations

from datetime import timedelta

import attrs
import pytest

pytestmark = pytest.mark.integration


def statuses(result):
    out: dict[str, int] = {}
    for outcome in result:
        out[outcome.status] = out.get(outcome.status, 0) + 1
    return out


def test_judgements_expired_behind_the_exporters_back_are_recreated_as_they_were(ctia, harness, record):
    h = harness(link_host="tq.example.com")
    records = [record(f"192.0.2.{i}", tags=["apt"]) for i in range(1, 11)]
    h.run(records)
    before = {r.source_id: h.holdings[r.source_id].remote["judgement_id"] for r in records}
    originals = {j["id"]: j for j in ctia.judgements()}
    victims = records[:3]
    for r in victims:
        ctia.expire_out_of_band(before[r.source_id], reason="cleanup script")
    ctia.app.calls.clear()
    result = h.verify([r.source_id for r in records])
    assert statuses(result) == {"accepted": 3}  # the other seven are not mentioned: live as held
    repaired = {o.source_id for o in result if o.remote is not None}
    assert repaired == {r.source_id for r in victims}
    assert h.reports[-1]["judgements"]["repaired"] == 3
    live = ctia.live_by_observable()
    assert len(live) == 10 and all(len(js) == 1 for js in live.values())
    for r in victims:
        new_id = h.holdings[r.source_id].remote["judgement_id"]
        assert new_id != before[r.source_id]
        (judgement,) = live[("ip", r.value)]
        old = originals[before[r.source_id]]
        assert judgement["id"] == new_id and judgement["reason"] == old["reason"]  # no "cleanup script" tail
        for key in ("observable", "disposition_name", "confidence", "severity", "priority", "tlp", "source_uri"):
            assert judgement[key] == old[key]
    # Read in bulk, written in one bundle: no request per judgement.
    assert [c for c in ctia.calls if c[0] == "GET"] == [("GET", "/ctia/bulk")]
    assert len([c for c in ctia.calls if c[1] == "/ctia/bundle/import"]) == 1


def test_a_repaired_judgement_keeps_its_records_expiry_and_one_past_it_is_not_revived(ctia, harness, record):
    h = harness()
    soon = record("192.0.2.50", expires_at=h.now + timedelta(days=3))
    lapsed = record("192.0.2.51", expires_at=h.now + timedelta(days=3))
    h.run([soon, lapsed])
    for r in (soon, lapsed):
        ctia.expire_out_of_band(h.holdings[r.source_id].remote["judgement_id"])
    later = harness()
    later.holdings.update(h.holdings)
    later.store.data.update(h.store.data)
    later.holdings[lapsed.source_id] = attrs.evolve(
        h.holdings[lapsed.source_id], remote={**h.holdings[lapsed.source_id].remote, "until": "2001-01-01T00:00:00.000Z"}
    )
    later.verify([soon.source_id, lapsed.source_id])
    (judgement,) = ctia.live_judgements("ip", "192.0.2.50")
    assert judgement["valid_time"]["end_time"].startswith((h.now + timedelta(days=3)).strftime("%Y-%m-%dT%H:%M"))
    assert ctia.live_judgements("ip", "192.0.2.51") == []
    assert later.reports[-1]["judgements"]["lapsed"] == 1


def test_after_a_repair_a_state_reset_still_ends_with_one_live_judgement(ctia, harness, record):
    h = harness()
    r = record("192.0.2.60")
    h.run([r])
    ctia.expire_out_of_band(h.holdings[r.source_id].remote["judgement_id"])
    h.verify([r.source_id])
    h.holdings.clear()
    h.store.data.clear()
    h.run([r])  # generation 0 exists but is dead; generation 1 is the repaired one, live
    live = ctia.live_judgements("ip", "192.0.2.60")
    assert len(live) == 1 and h.holdings[r.source_id].remote["judgement_id"] == live[0]["id"]


def test_a_repaired_judgement_joins_the_feed_again(ctia, harness, record):
    h = harness(feed="Repaired feed")
    r = record("repair.example", "domain")
    h.run([r])
    assert ctia.feed_view() == ["repair.example"]
    ctia.expire_out_of_band(h.holdings[r.source_id].remote["judgement_id"])
    assert ctia.feed_view() == []
    h.verify([r.source_id])
    assert ctia.feed_view() == ["repair.example"]


def test_when_ctia_cannot_be_read_verification_is_deferred(ctia, harness, record):
    h = harness(attempts=2)
    r = record("192.0.2.70")
    h.run([r])
    ctia.faults.fail_next(503, count=4, path_prefix="/ctia/bulk")
    assert statuses(h.verify([r.source_id])) == {"deferred": 1}


def test_a_dry_run_verifies_nothing(ctia, harness, record):
    h = harness()
    r = record("192.0.2.80")
    h.run([r])
    ctia.app.calls.clear()
    context = h.context(dry_run=True)
    h.sink.exportkit_open(context)
    h.sink.exportkit_verify([r.source_id], context)
    h.sink.exportkit_close(context, None)
    assert ctia.calls == []


def test_a_deleted_judgement_cannot_be_rebuilt_and_says_so(ctia, harness, record):
    h = harness()
    r = record("192.0.2.90")
    h.run([r])
    ctia.app.store.delete("judgement", h.holdings[r.source_id].remote["judgement_id"].rsplit("/", 1)[1])
    result = h.verify([r.source_id])
    (outcome,) = list(result)
    assert outcome.status == "rejected" and "gone from CTIA" in outcome.reason
    assert h.reports[-1]["judgements"]["gone"] == 1
