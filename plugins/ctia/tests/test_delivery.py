"""Delivery against the CTIA emulator over real HTTP: create once, change, withdraw, faults."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import attrs
import pytest

from exportkit.results import Withdrawal

pytestmark = pytest.mark.integration


def statuses(result):
    out = {}
    for outcome in result:
        out[outcome.status] = out.get(outcome.status, 0) + 1
    return out


def live_values(ctia):
    return sorted(j["observable"]["value"] for j in ctia.live_judgements())


def test_every_record_is_created_once_and_resending_creates_nothing(ctia, harness, record):
    h = harness()
    records = [record(f"198.51.100.{i}") for i in range(1, 21)]
    out = h.run(records)
    assert statuses(out["write"]) == {"accepted": 20}
    assert ctia.counts()["judgement"] == 20
    assert all(h.holdings[r.source_id].remote["judgement_id"].startswith(ctia.url) for r in records)
    # The engine lost its state (or a deferred batch comes again): same XIDs, nothing new.
    h.holdings.clear()
    out = h.run(records)
    assert statuses(out["write"]) == {"accepted": 20}
    assert ctia.counts()["judgement"] == 20
    assert h.sink.delivery.stats["exists"] == 20


def test_unsupported_and_invalid_values_are_skipped_and_never_sent(ctia, harness, record):
    h = harness()
    out = h.run([record("10.0.0.0/8", "cidr"), record("not-an-ip", "ip"), record("example.com", "domain")])
    assert statuses(out["write"]) == {"skipped": 2, "accepted": 1}
    assert live_values(ctia) == ["example.com"]


def test_a_changed_record_leaves_exactly_one_live_judgement(ctia, harness, record):
    h = harness()
    first = record("evil.example", "domain", score=5)
    h.run([first])
    changed = attrs.evolve(first, score=9)
    h.run([changed])
    assert len(ctia.judgements()) == 2
    live = ctia.live_judgements("domain", "evil.example")
    assert len(live) == 1 and "score 9" in live[0]["reason"]
    assert h.holdings[first.source_id].remote["judgement_id"] == live[0]["id"]
    # Changing back creates a third judgement instead of matching the expired first one.
    h.run([first])
    live = ctia.live_judgements("domain", "evil.example")
    assert len(ctia.judgements()) == 3 and len(live) == 1 and "score 5" in live[0]["reason"]


def test_a_whitelisted_record_becomes_clean(ctia, harness, record):
    h = harness()
    r = record("good.example", "domain")
    h.run([r])
    h.run([attrs.evolve(r, status="Whitelisted")])
    live = ctia.live_judgements("domain", "good.example")
    assert [j["disposition_name"] for j in live] == ["Clean"] and live[0]["disposition"] == 1


def test_withdrawals_leave_nothing_live(ctia, harness, record):
    h = harness()
    a, b = record("203.0.113.1"), record("203.0.113.2")
    h.run([a, b])
    expired = attrs.evolve(b, status="Expired")
    out = h.run([expired], [Withdrawal(a.source_id, "removed")])
    assert statuses(out["withdraw"]) == {"accepted": 2}
    assert ctia.live_judgements() == [] and h.holdings == {}
    # It comes back: a new judgement, not the expired one.
    h.run([a])
    assert live_values(ctia) == ["203.0.113.1"]


def test_an_expire_that_404s_counts_as_done(ctia, harness, record):
    h = harness()
    a = record("203.0.113.9")
    h.run([a])
    ctia.reset()
    out = h.run([], [Withdrawal(a.source_id, "removed")])
    assert statuses(out["withdraw"]) == {"accepted": 1}


def test_bundles_respect_max_entities(ctia, harness, record):
    h = harness(max_entities=7)
    h.run([record(f"192.0.2.{i}") for i in range(1, 31)])
    imports = [c for c in ctia.calls if c[1] == "/ctia/bundle/import"]
    assert len(imports) == 5 and ctia.counts()["judgement"] == 30


def test_a_smaller_server_limit_is_learned(ctia, harness, record):
    ctia.app.max_entities = 4
    h = harness(max_entities=10)
    out = h.run([record(f"192.0.2.{i}") for i in range(1, 11)])
    assert statuses(out["write"]) == {"accepted": 10}
    assert h.sink.delivery.chunk_entities == 4


def test_per_entity_errors_are_rejected_with_ctias_text(ctia, harness, record):
    ctia.app.min_tlp = "red"
    h = harness()
    out = h.run([record("192.0.2.77")])
    outcome = next(iter(out["write"]))
    assert outcome.status == "rejected" and "Invalid document TLP amber" in outcome.reason


def test_a_whole_request_400_dead_letters_the_chunk(ctia, harness, record):
    ctia.faults.fail_next(400, body={"errors": {"judgements": ["disallowed-key"]}}, path_prefix="/ctia/bundle")
    h = harness()
    out = h.run([record("192.0.2.5"), record("192.0.2.6")])
    assert statuses(out["write"]) == {"rejected": 2}
    assert "HTTP 400" in next(iter(out["write"])).reason


def test_a_short_retry_after_is_honoured(ctia, harness, record):
    ctia.faults.fail_next(429, count=2, headers={"Retry-After": "0.2"}, path_prefix="/ctia/bundle")
    h = harness()
    started = time.monotonic()
    out = h.run([record("192.0.2.8")])
    assert statuses(out["write"]) == {"accepted": 1}
    assert time.monotonic() - started >= 0.4


def test_a_retry_after_beyond_the_cap_defers_the_rest(ctia, harness, record):
    h = harness(max_entities=2, max_retry_after=5)
    records = [record(f"192.0.2.{i}") for i in range(1, 7)]
    ctia.set_request_budget(2, retry_after=3600)  # the lost-state probe and the first bundle get through, then 429
    out = h.run(records)
    assert statuses(out["write"]) == {"accepted": 2, "deferred": 4}
    assert "3600" in [o for o in out["write"] if o.status == "deferred"][0].reason
    # Next run: the budget is back, only the deferred ones go.
    ctia.set_request_budget(None)
    out = h.run(records)
    assert statuses(out["write"]) == {"accepted": 4}
    assert ctia.counts()["judgement"] == 6


def test_503_storms_and_dropped_connections_lose_and_duplicate_nothing(ctia, harness, record):
    h = harness(max_entities=5, attempts=4)
    first = [record(f"198.18.0.{i}") for i in range(1, 31)]
    # The first bundle gets 503, 503, a dropped connection, then goes through.
    ctia.faults.fail_next(503, count=2, path_prefix="/ctia/bundle")
    ctia.faults.drop_next(1, path_prefix="/ctia/bundle")
    out = h.run(first)
    assert statuses(out["write"]) == {"accepted": 30}
    # A storm longer than the retries: the batch is deferred, then delivered next run.
    second = [record(f"198.18.1.{i}") for i in range(1, 11)]
    ctia.faults.fail_next(503, count=4, path_prefix="/ctia/bundle")
    out = h.run(second)
    assert statuses(out["write"]) == {"deferred": 10}
    # Only the first bundle (5 records) went out and may have reached CTIA: its intents stay.
    assert h.reports[-1]["unfinished_intents"] == 5
    # The next open finishes them (CTIA never got them: "created"); all ten go out as usual.
    out = h.run(first + second)
    assert statuses(out["write"]) == {"accepted": 10}
    assert h.reports[-1]["judgements"]["recovered_created"] == 5
    assert ctia.counts()["judgement"] == 40 and len(ctia.live_by_observable()) == 40


def test_bundles_in_flight_at_once_keep_outcomes_and_order(ctia, harness, record):
    h = harness(max_entities=5, attempts=4, in_flight=3)
    first = [record(f"198.18.3.{i}") for i in range(1, 24)]
    out = h.run(first)
    assert statuses(out["write"]) == {"accepted": 23}
    assert [o.source_id for o in out["write"]] == [r.source_id for r in first], "outcomes in record order"
    assert [c for c in ctia.calls if c[1] == "/ctia/bundle/import"] == [("POST", "/ctia/bundle/import")] * 5
    # Every record changed: each new judgement exists before its old one is expired.
    changed = [attrs.evolve(r, score=2) for r in first]
    out = h.run(changed)
    assert statuses(out["write"]) == {"accepted": 23}
    assert ctia.counts()["judgement"] == 46 and len(ctia.live_by_observable()) == 23
    # A batch's first bundle goes alone: when CTIA is failing, the batch costs one round of retries.
    second = [record(f"198.18.4.{i}") for i in range(1, 11)]
    ctia.faults.fail_next(503, count=4, path_prefix="/ctia/bundle")
    before = len(ctia.calls)
    out = h.run(second)
    assert statuses(out["write"]) == {"deferred": 10}
    assert len([c for c in ctia.calls[before:] if c[1] == "/ctia/bundle/import"]) == 4
    out = h.run(second)
    assert statuses(out["write"]) == {"accepted": 10}
    assert len(ctia.live_by_observable()) == 33


def test_a_lost_answer_is_not_created_twice(ctia, harness, record):
    h = harness(timeout=1, attempts=2)
    records = [record("198.18.2.1"), record("198.18.2.2")]
    # CTIA stores the bundle but answers after our read timeout: the retry must find "exists".
    ctia.app.answer_delay = 1.2
    out = h.run(records)
    assert statuses(out["write"]) == {"deferred": 2}
    assert ctia.counts()["judgement"] == 2
    ctia.app.answer_delay = 0
    out = h.run(records)
    assert statuses(out["write"]) == {"accepted": 2}
    assert ctia.counts()["judgement"] == 2 and h.sink.delivery.stats["exists"] == 2


def test_a_failed_expiry_is_queued_and_retried(ctia, harness, record):
    h = harness(attempts=2)
    r = record("queue.example", "domain")
    h.run([r])
    # Six 503s: the expiry and its retry (which reads the judgement first, twice) in the run, and again at close.
    ctia.faults.fail_next(503, count=6, path_prefix="/ctia/judgement/")
    h.run([attrs.evolve(r, score=1)])
    assert h.reports[-1].get("pending_expiries") == 1
    assert len(ctia.live_judgements("domain", "queue.example")) == 2
    h.run([])
    assert "pending_expiries" not in h.store.data
    assert len(ctia.live_judgements("domain", "queue.example")) == 1


def test_expires_at_bounds_valid_time(ctia, harness, record):
    h = harness()
    r = record("192.0.2.200", expires_at=h.now + timedelta(days=2))
    h.run([r])
    judgement = ctia.judgements()[0]
    assert judgement["valid_time"]["end_time"].startswith((h.now + timedelta(days=2)).strftime("%Y-%m-%dT%H:%M"))


def test_dry_run_sends_nothing(ctia, harness, record):
    h = harness()
    out = h.run([record("192.0.2.1"), record("x", "cve")], dry_run=True)
    assert statuses(out["write"]) == {"accepted": 1, "skipped": 1}
    assert ctia.calls == []
    assert h.reports[-1]["judgements"]["dry_run_valid"] == 1


def test_a_held_record_that_can_no_longer_be_sent_is_expired(ctia, harness, record):
    h = harness()
    r = record("192.0.2.31")
    h.run([r])
    # A value that turned invalid only ever comes as a write, never as a withdrawal.
    h.run([attrs.evolve(r, value="not an ip")])
    assert ctia.live_judgements() == []
    assert h.reports[-1]["judgements"] == {"expired": 1, "skipped": 1}


def test_a_token_outage_mid_run_defers_the_batch(ctia, harness, record):
    h = harness(attempts=2)
    context = h.context()
    h.sink.exportkit_open(context)
    ctia.revoke_tokens()
    ctia.faults.fail_next(503, count=4, path_prefix="/iroh/")
    result = h.sink.exportkit_write([record("192.0.2.61")], context)
    h.sink.exportkit_close(context, None)
    assert statuses(result) == {"deferred": 1}


EAST = "east\nthreatq tq.example.com Collection A"
WEST = "west\nthreatq tq.example.com Collection B"


def same_records(records):
    """The same indicators as another instance pulls them (equal, separately built)."""
    return [attrs.evolve(r) for r in records]


def test_two_instances_never_share_or_withdraw_each_others_judgements(ctia, harness, record):
    east, west = harness(namespace=EAST), harness(namespace=WEST)
    records = [record(f"198.51.100.{i}") for i in range(1, 6)]
    east.run(records)
    west.run(same_records(records))
    assert ctia.counts()["judgement"] == 10 and west.sink.delivery.stats["created"] == 5
    # West is re-scoped: every one of its records leaves its collection.
    out = west.run([], [Withdrawal(r.source_id, "removed") for r in records])
    assert statuses(out["withdraw"]) == {"accepted": 5}
    live = ctia.live_by_observable()
    assert len(live) == 5 and all(len(js) == 1 for js in live.values())
    east_ids = {h.remote["judgement_id"] for h in east.holdings.values()}
    assert {js[0]["id"] for js in live.values()} == east_ids


def test_a_judgement_held_under_another_instances_xid_is_never_expired(ctia, harness, record):
    west = harness(namespace=WEST)
    r = record("shared.example", "domain")
    west.run([r])
    # East's state was bootstrapped from a copy of west's: it holds west's judgement.
    east = harness(namespace=EAST)
    east.holdings.update(west.holdings)
    out = east.run([], [Withdrawal(r.source_id, "removed")])
    assert statuses(out["withdraw"]) == {"accepted": 1} and east.holdings == {}
    assert len(ctia.live_judgements("domain", "shared.example")) == 1
    assert east.reports[-1]["judgements"]["left_to_owner"] == 1
    # A change does not expire it either: east creates its own, west's stays west's.
    east.holdings.update(west.holdings)
    east.run([attrs.evolve(r, score=1)])
    live = ctia.live_judgements("domain", "shared.example")
    assert len(live) == 2 and west.holdings[r.source_id].remote["judgement_id"] in {j["id"] for j in live}


def test_holdings_from_before_namespacing_are_kept_and_changes_follow_the_change_path(ctia, harness, record):
    h = harness()
    r = record("legacy.example", "domain")
    legacy_xid = "exportkit-judgement-" + "0f" * 32
    old = h.sink._client(h.context()).import_bundle({
        "type": "bundle", "source": "ThreatQ",
        "judgements": [{**_judgement_body("legacy.example"), "id": f"transient:{legacy_xid}", "external_ids": [legacy_xid]}],
    })[0]["id"]
    from exportkit.context import Holding

    h.holdings[r.source_id] = Holding(r.content_hash, {"judgement_id": old, "xid": legacy_xid, "generation": 0})
    h.run([r])  # unchanged: nothing is sent, the holding keeps its remote id
    assert ctia.counts()["judgement"] == 1 and h.holdings[r.source_id].remote["judgement_id"] == old
    h.run([attrs.evolve(r, score=2)])  # changed: a new, namespaced judgement, then the old one expired
    live = ctia.live_judgements("domain", "legacy.example")
    assert len(live) == 1 and live[0]["id"] != old
    assert live[0]["external_ids"][0].startswith("exportkit-judgement-") and live[0]["external_ids"][0] != legacy_xid
    assert h.holdings[r.source_id].remote["judgement_id"] == live[0]["id"]


def _judgement_body(value):
    return {"type": "judgement", "observable": {"type": "domain", "value": value}, "disposition": 2, "disposition_name": "Malicious",
            "source": "ThreatQ", "priority": 85, "confidence": "High", "severity": "High", "tlp": "amber",
            "valid_time": {"start_time": "2020-01-01T00:00:00.000Z", "end_time": "2525-01-01T00:00:00.000Z"}}


def test_after_three_failed_batches_the_sink_stops_trying_for_the_rest_of_the_run(ctia, harness, record):
    from exportkit.errors import TransientError

    h = harness(attempts=2)
    context = h.context()
    h.sink.exportkit_open(context)
    ctia.faults.fail_next(503, count=1000, path_prefix="/ctia/")
    ctia.app.calls.clear()
    deferred, raised, error = 0, 0, None
    for batch in range(6):
        try:
            result = h.sink.exportkit_write([record(f"198.18.9.{batch * 2 + i}") for i in (1, 2)], context)
            deferred += statuses(result).get("deferred", 0)
        except TransientError as exc:  # the engine defers the whole batch and every later one at once
            raised += 1
            assert "3 batches in a row (last: CTIA" in str(exc)
            error = exc
            break
    h.sink.exportkit_close(context, error)
    assert (deferred, raised) == (6, 1)
    # Three batches, two tries each; nothing after, not even the queued-expiry retry at close.
    assert len([c for c in ctia.calls if c[1].startswith("/ctia/")]) == 6
    assert context.notes["judgements"]["stopped_after_failures"] == 3


def test_a_success_between_failures_resets_the_count(ctia, harness, record):
    h = harness(attempts=1, max_failed_batches=2)
    context = h.context()
    h.sink.exportkit_open(context)
    for batch in range(4):  # fail, succeed, fail, succeed: never two in a row
        if batch % 2 == 0:
            ctia.faults.fail_next(503, count=1, path_prefix="/ctia/bundle")
        result = h.sink.exportkit_write([record(f"198.18.10.{batch}")], context)
        assert statuses(result) == ({"deferred": 1} if batch % 2 == 0 else {"accepted": 1})
    h.sink.exportkit_close(context, None)

def expiry_calls(ctia, judgement_id):
    return [c for c in ctia.calls if c == ("POST", f"/ctia/judgement/{judgement_id.rsplit('/', 1)[1]}/expire")]


def test_a_judgement_with_the_longest_reason_can_still_be_expired(ctia, harness, record):
    h = harness(reason="{{ value }} " + "x" * 1100)
    r = record("192.0.2.90")
    h.run([r])
    h.run([attrs.evolve(r, score=1)])
    assert len(ctia.live_judgements("ip", "192.0.2.90")) == 1, "the superseded judgement was expired"
    old = [j for j in ctia.judgements() if j not in ctia.live_judgements()][0]
    assert len(old["reason"]) <= 1024 and old["reason"].endswith("changed in ThreatQ")


def test_each_judgement_is_expired_once(ctia, harness, record):
    h = harness()
    r = record("192.0.2.91")
    h.run([r])
    first = h.holdings[r.source_id].remote["judgement_id"]
    # The value turns invalid: the judgement is expired, the record skipped (still held).
    h.run([attrs.evolve(r, value="not an ip")])
    h.run([attrs.evolve(r, value="still not an ip")])
    # Then it leaves the collection: nothing is left to expire.
    out = h.run([], [Withdrawal(r.source_id, "removed")])
    assert statuses(out["withdraw"]) == {"accepted": 1} and h.holdings == {}
    assert len(expiry_calls(ctia, first)) == 1
    assert ctia.live_judgements() == []


def test_an_invalid_value_that_becomes_valid_again_does_not_expire_twice(ctia, harness, record):
    h = harness()
    r = record("192.0.2.92")
    h.run([r])
    first = h.holdings[r.source_id].remote["judgement_id"]
    h.run([attrs.evolve(r, value="not an ip")])
    h.run([attrs.evolve(r, value="192.0.2.93")])
    assert len(expiry_calls(ctia, first)) == 1
    assert [j["observable"]["value"] for j in ctia.live_judgements()] == ["192.0.2.93"]


def test_a_queued_expiry_is_queued_once(ctia, harness, record):
    h = harness(attempts=1)
    r = record("192.0.2.94")
    h.run([r])
    first = h.holdings[r.source_id].remote["judgement_id"]
    ctia.faults.fail_next(503, count=10, path_prefix="/ctia/judgement/")
    h.run([attrs.evolve(r, value="not an ip")])
    h.run([attrs.evolve(r, value="not an ip either")])
    assert [p[0] for p in h.store.get("pending_expiries")] == [first]
    ctia.faults.clear()
    h.run([])
    assert ctia.live_judgements() == [] and "pending_expiries" not in h.store.data
    (judgement,) = ctia.judgements()
    assert judgement["reason"].count("withdrawn:") == 1, "expired once"


def test_a_whitelisted_records_old_verdict_is_first_in_the_expiry_queue(ctia, harness, record):
    h = harness(attempts=1)
    changed, whitelisted = record("192.0.2.95"), record("192.0.2.96")
    h.run([changed, whitelisted])
    old = {r.source_id: h.holdings[r.source_id].remote["judgement_id"] for r in (changed, whitelisted)}
    ctia.faults.fail_next(503, count=10, path_prefix="/ctia/judgement/")
    h.run([attrs.evolve(changed, score=1), attrs.evolve(whitelisted, status="Whitelisted")])
    queue = [judgement_id for judgement_id, _ in h.store.get("pending_expiries")]
    assert queue == [old[whitelisted.source_id], old[changed.source_id]]


def test_a_lost_expiry_answer_is_not_expired_twice(ctia, harness, record):
    h = harness(timeout=1, attempts=2)
    r = record("192.0.2.97")
    h.run([r])
    # CTIA expires the judgement but answers after our read timeout: the retry must see it is done.
    ctia.app.answer_delay = 1.2
    out = h.run([], [Withdrawal(r.source_id, "removed")])
    ctia.app.answer_delay = 0
    assert statuses(out["withdraw"]) == {"accepted": 1}
    (judgement,) = ctia.judgements()
    assert judgement["reason"].count("withdrawn:") == 1 and ctia.live_judgements() == []


def test_superseded_judgements_are_expired_in_flight_urgent_ones_first(ctia, harness, record, monkeypatch):
    """Changes over a WAN used to wait out one expiry round trip per record, one after another."""
    h = harness(in_flight=3)
    records = [record(f"192.0.2.{i}") for i in range(150, 158)]
    h.run(records)
    from exportkit_ctia.client import CtiaClient

    real, lock, active, peak, order = CtiaClient.expire_judgement, threading.Lock(), [0], [0], []

    def watched(client: CtiaClient, judgement_id: str, reason: str) -> bool:
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
            order.append(reason)
        try:
            time.sleep(0.15)  # a round trip, so that expiries sent together overlap
            return real(client, judgement_id, reason)
        finally:
            with lock:
                active[0] -= 1

    monkeypatch.setattr(CtiaClient, "expire_judgement", watched)  # each run opens its own client
    changed = [attrs.evolve(r, score=1) for r in records[:-1]] + [attrs.evolve(records[-1], status="Whitelisted")]
    out = h.run(changed)
    assert statuses(out["write"]) == {"accepted": 8}
    assert peak[0] == 3, "three expiries at a time"
    assert "whitelisted" in order[0], "the verdict that may sit in a blocklist feed ends first"
    assert all(len(ctia.live_judgements("ip", r.value)) == 1 for r in records)
    assert h.sink.delivery.stats["expired"] == 8
