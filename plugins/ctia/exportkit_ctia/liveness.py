"""Whether judgements are live, read from CTIA in bulk.

A judgement is *live* when its ``valid_time`` covers now: ``start_time <=
now < end_time`` (CTIA's expiry sets ``end_time`` to the moment of expiry).
Reads go through ``GET /ctia/bulk`` with many ids per request
(:meth:`~exportkit_ctia.client.CtiaClient.bulk_get`), never one request
per judgement, since CTIA's request budget is shared by the organisation.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Iterable, Mapping

from exportkit_ctia.client import CtiaClient
from exportkit_ctia.schema import parse_ctim_time

__all__ = ["is_live", "read_judgements", "utc_now"]


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def is_live(entity: Mapping[str, Any] | None, at: datetime) -> bool:
    """True when ``entity`` exists and its ``valid_time`` covers ``at`` (a missing bound is open)."""
    if not entity:
        return False
    span = entity.get("valid_time") or {}
    start = parse_ctim_time(span["start_time"]) if span.get("start_time") else None
    end = parse_ctim_time(span["end_time"]) if span.get("end_time") else None
    return (start is None or start <= at) and (end is None or at < end)


def read_judgements(client: CtiaClient, judgement_ids: Iterable[str]) -> dict[str, dict[str, Any] | None]:
    """The judgements CTIA holds for these long ids (``None`` for one it does not show), in bulk.

    :raises TransientError: CTIA could not answer now (the caller defers what depended on it).
    """
    ids = list(judgement_ids)
    return client.bulk_get("judgements", ids) if ids else {}
