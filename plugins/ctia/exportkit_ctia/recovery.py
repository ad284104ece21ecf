"""After lost state: find what CTIA holds for the records the sink does not hold, before sending them.

A state reset (or a lost state file) makes the sink forget which judgement
it held for each record. When such a record comes again (the first run after
a reset pulls everything), its current version may differ from the one CTIA
holds a live judgement for; sending it blindly would leave that old verdict
live beside the new one. So, when the store says this instance lost its
state (:func:`~exportkit_ctia.ownership.detect_lost_state`), every batch's
unheld records are looked up first by their record XIDs
(:func:`~exportkit_ctia.xids.record_xid`), 40 to a search request.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from exportkit.context import SinkContext
from exportkit.errors import TransientError
from exportkit.results import BatchResult
from exportkit_ctia.liveness import is_live, utc_now
from exportkit_ctia.mapping import MappedJudgement, judgement_xid, map_judgement
from exportkit_ctia.xids import record_xid

if TYPE_CHECKING:
    from exportkit_ctia.delivery import Delivery

__all__ = ["look_up_unheld", "SPARE_GENERATIONS"]

#: generations tried beyond twice the judgements found for a record (a generation
#: can pass without a judgement: a withdrawal, an expired one stepped over)
SPARE_GENERATIONS = 8


def look_up_unheld(delivery: Delivery, mapped: list[MappedJudgement], result: BatchResult, context: SinkContext) -> list[MappedJudgement]:
    """After lost state: find what CTIA holds for each unheld record, pick its generation, mark the rest to expire.

    One search per :data:`~exportkit_ctia.client.SEARCH_XIDS` records, by
    their record XIDs. A live judgement of the record's current version
    is taken as it is (at whatever generation); otherwise the first
    generation CTIA has never seen is sent. Every other live judgement of
    the record is expired once its verdict is live (by the delivery, when it
    accepts the record).
    """
    assert delivery.client is not None
    unheld = {m.source_id: record_xid(delivery.settings, context.namespace, m.source_id) for m in mapped if context.held(m.record) is None}
    if not unheld:
        return mapped
    try:
        found = delivery.client.judgements_with_xids(list(unheld.values()))
    except TransientError as exc:
        delivery.breaker.failed(exc)
        for m in mapped:
            if m.source_id in unheld:
                result.defer(m.source_id, f"could not look up what CTIA holds for this record after lost state: {exc}")
        delivery.stats["deferred"] += len(unheld)
        return [m for m in mapped if m.source_id not in unheld]
    by_record: dict[str, list[dict[str, Any]]] = {}
    wanted = set(unheld.values())
    for judgement in found:
        for xid in set(judgement.get("external_ids") or ()) & wanted:
            by_record.setdefault(xid, []).append(judgement)
    now = utc_now()
    out = []
    for m in mapped:
        held = by_record.get(unheld.get(m.source_id, ""), [])
        if not held:
            out.append(m)
            continue
        present = {x for j in held for x in j.get("external_ids") or ()}
        live = {j["id"]: j for j in held if is_live(j, now)}
        xids = {g: judgement_xid(m.record, delivery.settings, m.body["observable"], g, context.namespace) for g in range(2 * len(held) + SPARE_GENERATIONS)}
        live_xids = {x for j in live.values() for x in j.get("external_ids") or ()}
        generation = next((g for g, x in xids.items() if x in live_xids), None)
        if generation is None:
            generation = next(g for g, x in xids.items() if x not in present)
        chosen = m if generation == m.generation else map_judgement(m.record, delivery.settings, context.now, generation=generation, namespace=context.namespace)
        delivery.orphans[m.source_id] = [i for i, j in live.items() if chosen.xid not in j.get("external_ids", ())]
        delivery.stats["recovered"] += 1
        out.append(chosen)
    return out

