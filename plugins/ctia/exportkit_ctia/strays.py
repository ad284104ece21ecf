"""Strays: expire second live judgements of records this sink holds (on reconcile).

The intent log (:mod:`exportkit_ctia.intents`) keeps a crash from leaving a
second live judgement behind. Judgements left by a release without it, or by
a state restored from an old backup, are found here: on a run that
reconciles, the sink reads every judgement of this instance (each carries
the instance's XID, :func:`~exportkit_ctia.mapping.instance_xid`; paged
search requests, never one request per judgement), keeps those that are
valid now, and expires each one that belongs to a record the sink holds
*under another judgement* (the record's XID,
:func:`~exportkit_ctia.mapping.record_xid`, says which record).

Left alone: judgements of other instances (another namespace, so another
instance XID), judgements written before XIDs carried a namespace (they
cannot be told apart from another instance's), and judgements of records
the sink does not hold: after a state reset, or while a record waits to be
sent again, that is the one the next send finds (``exists``), not a stray.
"""

from __future__ import annotations

import re
from collections import Counter
from datetime import datetime

from exportkit.context import SinkContext
from exportkit.crashpoints import crash_point
from exportkit.errors import TransientError
from exportkit_ctia.client import CtiaClient, RequestRejected
from exportkit_ctia.liveness import is_live
from exportkit_ctia.mapping import instance_xid, record_xid
from exportkit_ctia.settings import CtiaSettings

__all__ = ["find_strays", "expire_strays", "lucene_term_query", "PAGE_SIZE"]

#: judgements per search request
PAGE_SIZE = 1000
_LUCENE_SPECIAL = re.compile(r'([+\-!(){}\[\]^"~*?:\\/&|])')


def lucene_term_query(field: str, value: str) -> str:
    """``field:value`` for an exact value, its Lucene special characters escaped."""
    escaped = _LUCENE_SPECIAL.sub(r"\\\1", value)
    return f"{field}:{escaped}"


def find_strays(client: CtiaClient, settings: CtiaSettings, context: SinkContext, now: datetime) -> list[str]:
    """Ids of live judgements of this instance for records the sink holds under another judgement."""
    held_by_record = {
        record_xid(settings, context.namespace, sid): (h.remote or {}).get("judgement_id") for sid, h in context.holdings.items()
    }
    query = lucene_term_query("external_ids", instance_xid(settings, context.namespace))
    strays: list[str] = []
    offset = 0
    while True:
        page = client.search_judgements(query, limit=PAGE_SIZE, offset=offset)
        for judgement in page:
            holding = next((held_by_record[x] for x in judgement.get("external_ids", ()) if x in held_by_record), None)
            if holding is not None and holding != judgement.get("id") and is_live(judgement, now):
                strays.append(judgement["id"])
        if len(page) < PAGE_SIZE:
            return strays
        offset += len(page)


def expire_strays(client: CtiaClient, settings: CtiaSettings, context: SinkContext, now: datetime, stats: Counter[str]) -> int:
    """Expire every stray judgement (see :func:`find_strays`); returns how many were expired."""
    try:
        strays = find_strays(client, settings, context, now)
    except TransientError as exc:  # the budget is spent or CTIA is busy: not a reason to stop the run
        context.logger.warning("reconcile: could not look for stray judgements now: %s", exc)
        return 0
    expired = 0
    for judgement_id in strays:
        try:
            client.expire_judgement(judgement_id, "superseded: not the judgement exportkit holds for its indicator (found by reconcile)")
        except TransientError as exc:  # the budget is spent or CTIA is busy: the next reconcile goes on
            context.logger.warning("reconcile: %d stray judgement(s) left for the next reconcile: %s", len(strays) - expired, exc)
            break
        except RequestRejected as exc:
            context.logger.warning("CTIA refused to expire stray judgement %s: %s", judgement_id, exc)
            continue
        crash_point("judgement-expired")
        expired += 1
    if expired:
        context.logger.warning("reconcile: expired %d second live judgement(s) of held records", expired)
    stats["strays_expired"] += expired
    return expired
