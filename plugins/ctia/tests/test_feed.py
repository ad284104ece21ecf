"""The indicator feed: created once, found again, and its view lists exactly the live observables."""

from __future__ import annotations

import attrs
import pytest
import requests

from exportkit.results import Withdrawal
from exportkit_ctia.feed import STORE_KEY

pytestmark = pytest.mark.integration


def test_feed_is_created_once_and_lists_exactly_the_live_observables(ctia, harness, record):
    h = harness(feed="ThreatQ High Confidence")
    a, b, c = record("198.51.100.7"), record("bad.example", "domain"), record("D41D8CD98F00B204E9800998ECF8427E", "md5")
    h.run([a, b, c])
    info = h.store.get(STORE_KEY)
    assert h.reports[-1]["feed_url"] == info["feed_view_url"]
    assert len(ctia.feeds()) == 1 and len(ctia.entities("indicator")) == 1
    view = requests.get(info["feed_view_url"], timeout=5)
    assert view.status_code == 200
    assert view.text.splitlines() == ["198.51.100.7", "bad.example", "d41d8cd98f00b204e9800998ecf8427e"]

    # Change one, withdraw another: the view follows, nothing is duplicated.
    h.run([attrs.evolve(a, score=2)], [Withdrawal(b.source_id, "removed")])
    assert requests.get(info["feed_view_url"], timeout=5).text.splitlines() == ["198.51.100.7", "d41d8cd98f00b204e9800998ecf8427e"]
    assert ctia.feed_view() == ["198.51.100.7", "d41d8cd98f00b204e9800998ecf8427e"]
    assert len(ctia.entities("relationship")) == 4  # one per judgement created
    assert len(ctia.feeds()) == 1 and len(ctia.entities("indicator")) == 1


def test_lost_state_finds_the_feed_again(ctia, harness, record):
    h = harness(feed="F")
    h.run([record("192.0.2.1")])
    first = h.store.get(STORE_KEY)
    h.store.data.clear()
    h.run([record("192.0.2.2")])
    assert h.store.get(STORE_KEY)["feed_id"] == first["feed_id"]
    assert len(ctia.feeds()) == 1 and len(ctia.entities("indicator")) == 1
    assert ctia.feed_view() == ["192.0.2.1", "192.0.2.2"]


def test_resent_bundles_do_not_duplicate_relationships(ctia, harness, record):
    h = harness(feed="F")
    records = [record(f"192.0.2.{i}") for i in range(1, 6)]
    h.run(records)
    h.holdings.clear()
    h.run(records)
    assert len(ctia.entities("relationship")) == 5 and len(ctia.judgements()) == 5


def test_feed_view_needs_the_secret(ctia, harness, record):
    h = harness(feed="F")
    h.run([record("192.0.2.1")])
    feed = ctia.feeds()[0]
    assert requests.get(feed["id"] + "/view.txt?s=wrong", timeout=5).status_code == 401
    assert requests.get(feed["id"] + "/view", params={"s": feed["secret"]}, timeout=5).json() == {
        "observables": [{"type": "ip", "value": "192.0.2.1"}]
    }


def test_a_failed_feed_link_keeps_the_judgement(ctia, harness, record):
    h = harness(feed="F")
    h.run([record("192.0.2.1")])
    indicator = ctia.entities("indicator")[0]
    ctia.app.store.delete("indicator", indicator["id"].rsplit("/", 1)[1])
    ctia.app.min_tlp = "amber"
    # Point the sink at an indicator id CTIA will refuse as a transient leftover.
    h.store.data[STORE_KEY]["indicator_id"] = "transient:missing"
    out = h.run([record("192.0.2.9")])
    outcome = next(iter(out["write"]))
    assert outcome.status == "accepted" and outcome.remote["feed_linked"] is False
    assert h.reports[-1]["judgements"]["feed_link_errors"] == 1


def view(info):
    """The feed as a firewall reads it: the view URL, no token."""
    response = requests.get(info["feed_view_url"], timeout=5)
    assert response.status_code == 200
    return response.text.splitlines()


def test_the_feed_is_a_blocklist_and_a_whitelisted_record_leaves_it(ctia, harness, record):
    h = harness(feed="Blocklist")
    bad, allowed, turning = record("198.51.100.1"), record("198.51.100.2", status="Whitelisted"), record("198.51.100.3")
    h.run([bad, allowed, turning])
    info = h.store.get(STORE_KEY)
    assert view(info) == ["198.51.100.1", "198.51.100.3"], "a Clean (Whitelisted) observable never enters the feed"
    h.run([attrs.evolve(turning, status="Whitelisted")])
    assert view(info) == ["198.51.100.1"], "a record that turns Whitelisted leaves the feed at the next run"
    (clean,) = ctia.live_judgements("ip", "198.51.100.3")
    assert clean["disposition_name"] == "Clean"
    # Only the blocklisted judgements carry a relationship to the feed's indicator.
    assert len(ctia.entities("relationship")) == 2


def test_the_feed_dispositions_are_a_setting(ctia, harness, record):
    h = harness(feed="Watchlist", disposition="Suspicious", feed_dispositions=["malicious"])
    h.run([record("198.51.100.4")])
    assert view(h.store.get(STORE_KEY)) == [], "Suspicious is not in the chosen set"
    assert ctia.live_judgements("ip", "198.51.100.4")[0]["disposition_name"] == "Suspicious"
    h2 = harness(feed="Watchlist 2", feed_dispositions=["Malicious", "Clean"])
    h2.run([record("198.51.100.5", status="Whitelisted")])
    assert view(h2.store.get(STORE_KEY)) == ["198.51.100.5"]
