"""The run's request budget and CTIA's organisation rate limit, against the emulator with the limit on."""

from __future__ import annotations

import time

import attrs
import pytest
import requests

from exportkit.results import Withdrawal
from exportkit_ctia.budget import BudgetSpent, RequestBudget
from exportkit_ctia.emulator import CtiaEmulator

from exportkit_ctia.plugin import CtiaSink

from .conftest import Harness, fast_policy, settings_from


def statuses(result):
    out: dict[str, int] = {}
    for outcome in result:
        out[outcome.status] = out.get(outcome.status, 0) + 1
    return out


def api_calls(ctia, since=0):
    return [c for c in ctia.calls[since:] if c[1].startswith("/ctia/")]


def test_budget_counts_and_stops():
    budget = RequestBudget(2)
    budget.spend()
    budget.spend()
    with pytest.raises(BudgetSpent, match="request_budget"):
        budget.spend()
    assert budget.summary()["sent"] == 2 and budget.remaining == 0
    other = RequestBudget(5)
    other.stop("CTIA's rate limit is reached")
    with pytest.raises(BudgetSpent, match="rate limit"):
        other.spend()


@pytest.fixture
def limited():
    # Like Cisco's private intel: an organisation-wide rolling hourly limit (small here).
    with CtiaEmulator(org_rate_limit=60) as emulator:
        yield emulator


def sink_for(ctia, **overrides):
    settings = settings_from(ctia.sink_settings(**overrides))
    return Harness(CtiaSink(settings, policy=fast_policy(settings)))


@pytest.mark.integration
def test_a_run_stays_within_its_budget_and_spreads_expiries_over_runs(limited, record):
    h = sink_for(limited, request_budget=10, max_entities=10)
    records = [record(f"198.51.100.{i}") for i in range(1, 21)]
    h.run(records)
    changed = [attrs.evolve(r, score=1) for r in records]
    sent_per_run = []
    for _ in range(6):
        before = len(limited.calls)
        out = h.run(changed)
        sent_per_run.append(len(api_calls(limited, before)))
        if not h.store.get("pending_expiries") and all(o.status == "accepted" for o in out.get("write", ())):
            break
    assert max(sent_per_run) <= 10, sent_per_run
    assert len(sent_per_run) > 1, "the work was spread over runs"
    assert h.reports[1]["requests"] == {"sent": 10, "budget": 10, "stopped": h.reports[1]["requests"]["stopped"]}
    # It converges: one live judgement per observable, the new one, and nothing left queued.
    live = limited.live_by_observable()
    assert len(live) == 20 and all(len(js) == 1 and "score 1" in js[0]["reason"] for js in live.values())
    assert "pending_expiries" not in h.store.data
    assert all(h.holdings[r.source_id].content_hash == r.content_hash for r in changed)


@pytest.mark.integration
def test_the_budget_defers_records_and_queues_expiries_instead_of_failing(limited, record):
    # A first run: one read (did this instance export before?), then three bundles.
    h = sink_for(limited, request_budget=4, max_entities=2)
    records = [record(f"203.0.113.{i}") for i in range(1, 9)]
    out = h.run(records)
    assert statuses(out["write"]) == {"accepted": 6, "deferred": 2}
    deferred = next(o for o in out["write"] if o.status == "deferred")
    assert "request_budget" in deferred.reason
    assert len(api_calls(limited)) == 4


@pytest.mark.integration
def test_an_hour_long_retry_after_stops_the_run_without_sleeping(record):
    with CtiaEmulator(org_rate_limit=4) as ctia:
        # One bundle at a time: with two in flight, either may take the last request of the
        # limit, and which records are accepted would depend on which one arrived first.
        h = sink_for(ctia, max_entities=2, in_flight=1)
        held = record("192.0.2.200")
        h.run([held])  # two requests: did this instance export before? then the bundle
        context = h.context()
        started = time.monotonic()
        h.sink.exportkit_open(context)
        first = h.sink.exportkit_write([record(f"192.0.2.{i}") for i in range(1, 7)], context)
        second = h.sink.exportkit_write([record("192.0.2.50"), attrs.evolve(held, score=1)], context)
        gone = h.sink.exportkit_withdraw([Withdrawal(held.source_id, "removed")], context)
        h.sink.exportkit_close(context, None)
        assert time.monotonic() - started < 5, "no waiting for an hour-long Retry-After"
        assert statuses(first) == {"accepted": 4, "deferred": 2} and statuses(second) == {"deferred": 2}
        assert statuses(gone) == {"deferred": 1}
        assert "rate limit" in context.notes["requests"]["stopped"]
        # Four requests went through, one was refused with 429, and then the run sent nothing more.
        assert len(api_calls(ctia)) == 5


@pytest.mark.integration
def test_another_client_spending_the_organisation_limit_defers_the_run(record):
    with CtiaEmulator(org_rate_limit=5) as ctia:
        ctia.add_client("other-client", "other-password")  # another API client of the same organisation
        token = requests.post(ctia.token_url, auth=("other-client", "other-password"), data={"grant_type": "client_credentials"}).json()
        for _ in range(5):
            requests.get(f"{ctia.url}/ctia/judgement/search", headers={"Authorization": f"Bearer {token['access_token']}"})
        h = sink_for(ctia)
        out = h.run([record("192.0.2.77")])
        assert statuses(out["write"]) == {"deferred": 1}
        assert "asks to retry after" in h.reports[-1]["requests"]["stopped"]
