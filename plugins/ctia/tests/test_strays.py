"""Strays: live judgements with this sink's XID prefix that no record holds are expired."""

from __future__ import annotations

import pytest

from exportkit_ctia import strays
from exportkit_ctia.mapping import bundle, map_judgement
from exportkit_ctia.strays import lucene_term_query


def test_lucene_term_query_escapes_special_characters():
    assert lucene_term_query("external_ids", "exportkit-instance-ab") == r"external_ids:exportkit\-instance\-ab"
    assert lucene_term_query("f", "a:b/c*") == r"f:a\:b\/c\*"


def _stray(h, ctia, record, *, namespace: str | None = None) -> str:
    """A live judgement for ``record`` that the sink does not hold (what a crash of an older release left)."""
    settings = h.sink.settings
    mapped = map_judgement(record, settings, h.now, generation=7, namespace=namespace or h.namespace)
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
    h = harness()
    records = [record(f"192.0.2.{i}") for i in range(80, 85)]
    h.run(records)
    held = {h.holdings[r.source_id].remote["judgement_id"] for r in records}
    stray = _stray(h, ctia, records[0])
    foreign = _stray(h, ctia, records[1], namespace="another instance\nthreatq tq.example.com Other")
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
    assert foreign in live, "judgements of another instance are not ours"
    assert unheld in live, "a judgement of a record the sink does not hold is not a stray"
    assert h.reports[-1]["strays_expired"] == 1
    searches = [path for _, path in ctia.calls if path.startswith("/ctia/judgement/search")]
    assert 3 <= len(searches) <= 5, "paged search, not one request per judgement"

    h.run([])
    assert h.reports[-1]["strays_expired"] == 0
