""""exists" counts only when the judgement is live: state reset, returns, and expiry behind the exporter's back."""

from __future__ import annotations

import collections

import attrs
import pytest

from exportkit.results import Withdrawal
from exportkit_ctia.ownership import OWNERS_KEY, RECOVER_KEY

pytestmark = pytest.mark.integration


def statuses(result):
    out: dict[str, int] = {}
    for outcome in result:
        out[outcome.status] = out.get(outcome.status, 0) + 1
    return out


def live_for(ctia, value, type="ip"):
    return ctia.live_judgements(type, value)


def forget_everything(h):
    """``exportkit state reset --sink ctia``: holdings and the sink's store are gone."""
    h.holdings.clear()
    h.store.data.clear()


def test_expired_then_state_reset_then_active_again_ends_with_one_live_judgement(ctia, harness, record):
    h = harness()
    r = record("192.0.2.10")
    h.run([r])
    h.run([attrs.evolve(r, status="Expired")])
    assert live_for(ctia, "192.0.2.10") == []
    forget_everything(h)
    out = h.run([r])  # Active again: its first XID answers "exists", but that judgement is expired
    assert statuses(out["write"]) == {"accepted": 1}
    live = live_for(ctia, "192.0.2.10")
    assert len(live) == 1 and h.holdings[r.source_id].remote["judgement_id"] == live[0]["id"]
    assert h.sink.delivery.stats["recovered"] == 1


def test_exists_for_an_expired_judgement_sends_the_next_generation(ctia, harness, record):
    h = harness()
    r = record("192.0.2.12")
    h.run([r])
    h.run([attrs.evolve(r, status="Expired")])
    owners = h.store.data[OWNERS_KEY]
    forget_everything(h)
    h.store.data.update({OWNERS_KEY: owners, RECOVER_KEY: False})  # no lookup: only "exists" can tell
    out = h.run([r])
    assert statuses(out["write"]) == {"accepted": 1}
    live = live_for(ctia, "192.0.2.12")
    assert len(live) == 1 and h.holdings[r.source_id].remote["judgement_id"] == live[0]["id"]
    assert h.sink.delivery.stats["exists_not_live"] == 1


def test_expired_then_active_again_without_a_reset(ctia, harness, record):
    h = harness()
    r = record("192.0.2.11")
    h.run([r])
    h.run([attrs.evolve(r, status="Expired")])
    h.run([r])
    assert len(live_for(ctia, "192.0.2.11")) == 1


def test_a_b_a_with_a_lost_answer_each_time_ends_with_one_live_judgement(ctia, harness, record):
    h = harness()
    a = record("a-b-a.example", "domain", score=5)
    b = attrs.evolve(a, score=9)
    for version in (a, b, a):
        before = h.holdings.get(a.source_id)
        h.run([version])
        after = h.holdings[a.source_id]
        # The answer was lost: the engine still holds what it held before and sends the same version again.
        if before is None:
            del h.holdings[a.source_id]
        else:
            h.holdings[a.source_id] = before
        h.run([version])
        assert h.holdings[a.source_id].remote["judgement_id"] == after.remote["judgement_id"]
    live = live_for(ctia, "a-b-a.example", "domain")
    assert len(live) == 1 and "score 5" in live[0]["reason"]


def test_a_judgement_expired_behind_the_exporters_back_is_replaced_when_its_record_comes_again(ctia, harness, record):
    h = harness()
    records = [record(f"192.0.2.{i}") for i in range(20, 30)]
    h.run(records)
    victims = records[:4]
    for r in victims:
        assert ctia.expire_out_of_band(h.holdings[r.source_id].remote["judgement_id"]) == 1
    forget_everything(h)
    out = h.run(records)
    assert statuses(out["write"]) == {"accepted": 10}
    live = ctia.live_by_observable()
    assert len(live) == 10 and all(len(js) == 1 for js in live.values())
    assert ctia.counts()["judgement"] == 14


def test_liveness_is_read_in_bulk_never_one_request_per_judgement(ctia, harness, record):
    h = harness()
    records = [record(f"198.18.5.{i}") for i in range(1, 151)]
    h.run(records)
    forget_everything(h)
    ctia.app.calls.clear()
    h.run(records)
    reads = collections.Counter(path.split("/external_id/")[0] for method, path in ctia.calls if method == "GET")
    # One probe (is this a reset?), a few searches (what does CTIA hold for these records?), a few bulk reads.
    assert set(reads) <= {"/ctia/judgement", "/ctia/judgement/search", "/ctia/bulk"}
    assert reads["/ctia/judgement"] == 1 and reads["/ctia/judgement/search"] <= 4 and reads["/ctia/bulk"] <= 2


def test_when_liveness_cannot_be_read_the_record_is_deferred_not_accepted(ctia, harness, record):
    h = harness(attempts=2)
    r = record("192.0.2.40")
    h.run([r])
    forget_everything(h)
    ctia.faults.fail_next(503, count=4, path_prefix="/ctia/bulk")
    out = h.run([r])
    assert statuses(out["write"]) == {"deferred": 1}
    assert r.source_id not in h.holdings


def test_a_withdrawal_after_a_reset_still_finds_nothing_to_expire_wrongly(ctia, harness, record):
    h = harness()
    r = record("192.0.2.50")
    h.run([r])
    out = h.run([], [Withdrawal(r.source_id, "removed")])
    assert statuses(out["withdraw"]) == {"accepted": 1}
    assert live_for(ctia, "192.0.2.50") == []


def test_a_change_after_a_state_reset_replaces_the_judgement_held_before_it(ctia, harness, record):
    h = harness()
    a = record("reset-change.example", "domain", score=5)
    h.run([a])
    forget_everything(h)
    b = attrs.evolve(a, status="Whitelisted")  # after the reset the indicator turns Whitelisted
    h.run([b])
    live = live_for(ctia, "reset-change.example", "domain")
    assert [j["disposition_name"] for j in live] == ["Clean"], "the Malicious verdict held before the reset must not stay live"
    assert h.holdings[a.source_id].remote["judgement_id"] == live[0]["id"]


def test_after_a_state_reset_a_b_a_ends_with_one_live_judgement(ctia, harness, record):
    h = harness()
    a = record("reset-aba.example", "domain", score=5)
    b = attrs.evolve(a, score=9)
    h.run([a])
    h.run([b])
    forget_everything(h)
    out = h.run([a])
    assert statuses(out["write"]) == {"accepted": 1}
    live = live_for(ctia, "reset-aba.example", "domain")
    assert len(live) == 1 and "score 5" in live[0]["reason"]
    # Once more: the held one is recognised, nothing new is created.
    forget_everything(h)
    before = len(ctia.judgements())
    h.run([a])
    assert len(ctia.judgements()) == before and len(live_for(ctia, "reset-aba.example", "domain")) == 1


def test_a_first_run_costs_one_probe_and_no_searches(ctia, harness, record):
    h = harness()
    h.run([record(f"198.18.7.{i}") for i in range(1, 41)])
    searches = [c for c in ctia.calls if c[1].startswith("/ctia/judgement/search")]
    probes = [c for c in ctia.calls if "/external_id/" in c[1]]
    assert searches == [] and len(probes) == 1


def test_the_lost_state_search_is_batched(ctia, harness, record):
    h = harness()
    records = [record(f"198.18.8.{i}") for i in range(1, 101)]
    h.run(records)
    forget_everything(h)
    ctia.app.calls.clear()
    h.run(records)
    searches = [c for c in ctia.calls if c[1] == "/ctia/judgement/search"]
    assert 1 <= len(searches) <= 4
    assert ctia.counts()["judgement"] == 100
