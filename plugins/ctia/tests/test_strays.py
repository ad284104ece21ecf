"""Strays: live judgements with this sink's XID prefix that no record holds are expired."""

from __future__ import annotations

import pytest

from exportkit_ctia import strays
from exportkit_ctia.mapping import bundle, map_judgement
from exportkit_ctia.strays import lucene_prefix_query, record_of


def test_record_of_reads_the_link_back_to_threatq():
    assert record_of({"source_uri": "https://tq.example.com/indicators/12%2F3/details"}) == "12/3"
    assert record_of({"source_uri": "https://elsewhere.example.com/x"}) is None
    assert record_of({}) is None


def test_lucene_prefix_query_escapes_special_characters():
    assert lucene_prefix_query("external_ids", "exportkit-judgement-") == r"external_ids:exportkit\-judgement\-*"
    assert lucene_prefix_query("f", "a:b/c") == r"f:a\:b\/c*"


def _stray(h, ctia, record, *, xid_prefix: str | None = None) -> str:
    """A live judgement for ``record`` that the sink does not hold (what a crash of an older release left)."""
    settings = h.sink.settings
    if xid_prefix:
        import attrs

        settings = attrs.evolve(settings, xid_prefix=xid_prefix)
    mapped = map_judgement(record, settings, h.now, generation=7)
    client = h.sink._client(h.context())
    try:
        (answer,) = client.import_bundle(bundle(settings, judgements=[mapped.body]))
    finally:
        client.close()
    assert answer["result"] == "created"
    return answer["id"]


@pytest.mark.integration
def test_reconcile_expires_strays_and_nothing_else(ctia, harness, record, monkeypatch):
    monkeypatch.setattr(strays, "PAGE_SIZE", 2)  # several pages
    h = harness(link_host="tq.example.com")
    records = [record(f"192.0.2.{i}") for i in range(80, 85)]
    h.run(records)
    held = {h.holdings[r.source_id].remote["judgement_id"] for r in records}
    stray = _stray(h, ctia, records[0])
    foreign = _stray(h, ctia, records[1], xid_prefix="someone-else")
    # Ours, for a record the sink does not hold (after a state reset, say): the next send takes it.
    unheld = _stray(h, ctia, record("192.0.2.90"))

    h.run([])  # a run that does not reconcile leaves everything alone
    assert not any(path.startswith("/ctia/judgement/search") for _, path in ctia.calls)
    assert stray in {j["id"] for j in ctia.live_judgements()}

    h.reconcile = True
    h.run([])
    live = {j["id"] for j in ctia.live_judgements()}
    assert stray not in live, "the second live judgement of a record is expired"
    assert held <= live, "what the sink holds stays live"
    assert foreign in live, "judgements of another XID prefix are not ours"
    assert unheld in live, "a judgement of a record the sink does not hold is not a stray"
    assert h.reports[-1]["strays_expired"] == 1
    searches = [path for _, path in ctia.calls if path.startswith("/ctia/judgement/search")]
    assert 3 <= len(searches) <= 5, "paged search, not one request per judgement"

    h.run([])
    assert h.reports[-1]["strays_expired"] == 0
