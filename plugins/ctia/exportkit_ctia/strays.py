"""Strays: expire live judgements of this sink that are not the one it holds for a record (on reconcile).

The intent log (:mod:`exportkit_ctia.intents`) keeps a crash from leaving a
second live judgement behind. Judgements left by a release without it, or by
a state restored from an old backup, are found here: on a run that
reconciles, the sink reads every judgement carrying its external-id prefix
(paged search requests, never one request per judgement), keeps those that
are valid now, and expires each one that belongs to a record the sink holds
*under another judgement*. A judgement of a record the sink does not hold
is left alone: after a state reset, or while a record waits to be sent
again, it is the one the next send finds (``exists``), not a stray. The
record of a judgement is read from its link back to ThreatQ
(``source_uri``, ``.../indicators/<id>/details``).

Which judgements are "ours" is decided by the external-id prefix alone
(:func:`owner_prefix`), so the prefix must belong to this instance only: two
instances that share a prefix on one CTIA would take each other's
judgements for strays.
"""

from __future__ import annotations

import re
from collections import Counter
from datetime import datetime
from typing import Any
from urllib.parse import unquote

from exportkit.context import SinkContext
from exportkit.crashpoints import crash_point
from exportkit.errors import TransientError
from exportkit_ctia.client import CtiaClient, RequestRejected
from exportkit_ctia.schema import parse_ctim_time
from exportkit_ctia.settings import CtiaSettings

__all__ = ["find_strays", "expire_strays", "lucene_prefix_query", "owner_prefix", "PAGE_SIZE"]

#: judgements per search request
PAGE_SIZE = 1000
_LUCENE_SPECIAL = re.compile(r'([+\-!(){}\[\]^"~*?:\\/&|])')


def lucene_prefix_query(field: str, prefix: str) -> str:
    """``field:<prefix>*`` with the prefix's Lucene special characters escaped."""
    escaped = _LUCENE_SPECIAL.sub(r"\\\1", prefix)
    return f"{field}:{escaped}*"


def owner_prefix(settings: CtiaSettings, context: SinkContext) -> str:
    """What every judgement XID this sink writes starts with (see :func:`~exportkit_ctia.mapping.judgement_xid`)."""
    return f"{settings.xid_prefix}-judgement-"


def _is_live(judgement: dict[str, Any], now: datetime) -> bool:
    span = judgement.get("valid_time") or {}
    start = parse_ctim_time(span.get("start_time", "1970-01-01T00:00:00.000Z"))
    end = parse_ctim_time(span.get("end_time", "2525-01-01T00:00:00.000Z"))
    return bool(start and end and start <= now < end)


_RECORD_LINK = re.compile(r"/indicators/([^/?#]+)/details$")


def record_of(judgement: dict[str, Any]) -> str | None:
    """The source id a judgement was made for, from its link back to ThreatQ (``None``: no such link)."""
    match = _RECORD_LINK.search(str(judgement.get("source_uri") or ""))
    return unquote(match.group(1)) if match else None


def find_strays(client: CtiaClient, settings: CtiaSettings, context: SinkContext, now: datetime) -> list[str]:
    """Ids of live judgements with this sink's XID prefix for records the sink holds under another judgement."""
    held = {sid: (h.remote or {}).get("judgement_id") for sid, h in context.holdings.items()}
    prefix = owner_prefix(settings, context)
    query = lucene_prefix_query("external_ids", prefix)
    strays: list[str] = []
    offset = 0
    while True:
        page = client.search_judgements(query, limit=PAGE_SIZE, offset=offset)
        for judgement in page:
            ours = any(str(x).startswith(prefix) for x in judgement.get("external_ids", ()))
            record = record_of(judgement)
            if ours and record in held and held[record] not in (None, judgement.get("id")) and _is_live(judgement, now):
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
