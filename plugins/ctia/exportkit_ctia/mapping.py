"""Record -> CTIA bodies: pure functions, no I/O, no clock (the export time is passed in).

One live indicator becomes one judgement (docs/ctia-mapping.md has the rules for users):

* ``observable``: the record's canonical type when CTIM knows it (identity
  map, :data:`OBSERVABLE_TYPES`) and its value normalised for that type
  (:func:`normalise_observable`, in :mod:`exportkit_ctia.observables`); other
  types and invalid values raise :class:`Unmappable` and are skipped, never sent;
* ``disposition``/``disposition_name`` from the settings; Whitelisted is Clean;
* ``confidence``, ``severity``, ``priority``, ``source`` from the settings;
  ``tlp`` ``red`` when the record is red, else ``amber``; ``authorized_users``
  and ``authorized_groups`` from the settings when set (CTIA lets only the
  owner and those read a red judgement);
* ``valid_time`` from the export time to ``expires_at`` or the configured
  expiration, never past 2525-01-01T00:00:00.000Z;
* ``source_uri`` and an external reference linking back to ThreatQ;
* ``reason`` rendered from the template (:mod:`exportkit_ctia.reasons`), at
  most :data:`REASON_MAX` characters (room is left for the one expiry reason CTIA appends);
* ``external_ids``: one deterministic XID per judgement *version* and
  instance (:func:`judgement_xid`), so a re-sent batch maps onto what CTIA
  already has and two instances never share a judgement; then the record's
  XID (:func:`record_xid`, the same for every version) and the instance's
  (:func:`instance_xid`), so a state reset can find what the instance holds.
With a feed, only judgements :func:`joins_feed` accepts are linked into it.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote, urlsplit

import attrs

from exportkit.records import Indicator, format_time
from exportkit_ctia.observables import OBSERVABLE_TYPES, Unmappable, normalise_observable, unsupported_type
from exportkit_ctia.reasons import EXPIRY_REASON_MAX, REASON_MAX, reason_variables, render_reason
from exportkit_ctia.schema import DISPOSITION_NUMBERS
from exportkit_ctia.settings import CtiaSettings
from exportkit_ctia.xids import (
    LEGACY_OWNER,
    instance_xid,
    lookup_prefixes,
    namespace_tag,
    owner_key,
    record_xid,
    seed_hash,
    xid_from_parts,
    xid_owner,
)

__all__ = [
    "EXPIRY_REASON_MAX",
    "REASON_MAX",
    "reason_variables",
    "OBSERVABLE_TYPES",
    "unsupported_type",
    "NEVER",
    "Unmappable",
    "MappedJudgement",
    "normalise_observable",
    "valid_time",
    "render_reason",
    "indicator_link",
    "judgement_xid",
    "xid_from_parts",
    "record_xid",
    "instance_xid",
    "lookup_prefixes",
    "namespace_tag",
    "owner_key",
    "xid_owner",
    "LEGACY_OWNER",
    "map_judgement",
    "joins_feed",
    "element_of",
    "feed_indicator",
    "feed_body",
    "feed_xid",
    "bundle",
]

#: CTIA's "forever": no time may lie past it
NEVER = datetime(2525, 1, 1, tzinfo=timezone.utc)
EXPIRATION_DAYS: Mapping[str, int | None] = {
    "2 Weeks": 14, "1 Month": 30, "6 Months": 180, "1 Year": 365, "5 Years": 5 * 365, "Never": None,
}
@attrs.frozen
class MappedJudgement:
    """A record mapped to its judgement body, with the ids the delivery needs."""

    record: Indicator
    body: dict[str, Any]
    xid: str
    generation: int

    @property
    def transient_id(self) -> str:
        return str(self.body["id"])

    @property
    def source_id(self) -> str:
        return self.record.source_id


# --- observables -------------------------------------------------------------------


# --- judgement fields ----------------------------------------------------------------


def valid_time(record: Indicator, now: datetime, expiration: str) -> tuple[datetime, datetime]:
    """``(start, end)``: from the export time to ``expires_at``, or to now + the expiration.

    :raises Unmappable: the record has expired already (it should be withdrawn, not sent).
    """
    if record.is_expired(now):
        raise Unmappable("the indicator has expired")
    if record.expires_at is not None:
        end = record.expires_at
    else:
        days = EXPIRATION_DAYS[expiration]
        end = NEVER if days is None else now + timedelta(days=days)
    return now, min(end, NEVER)


_PLAIN_WEB_LINK = re.compile(r"https?://[A-Za-z0-9.-]+(?::[0-9]{1,5})?(?:[/?#]|\Z)")


def indicator_link(record: Indicator, link_host: str | None) -> str | None:
    """The link back to the indicator in ThreatQ, or ``None`` when there is no usable one."""
    if link_host:
        base = link_host if "://" in link_host else f"https://{link_host}"
        return f"{base.rstrip('/')}/indicators/{quote(record.source_id, safe='')}/details"
    if record.link and len(record.link) <= 2048:
        link = record.link.strip()
        if _PLAIN_WEB_LINK.match(link):  # what sources write; urlsplit agrees on these, at a fifth of the cost
            return link
        try:
            parts = urlsplit(link)
        except ValueError:  # "http://[::1": not a link anyone can follow
            return None
        if parts.scheme in ("http", "https") and parts.netloc:
            return link
    return None


def _disposition(record: Indicator, settings: CtiaSettings) -> str:
    return "Clean" if record.is_whitelisted else settings.disposition


def judgement_xid(record: Indicator, settings: CtiaSettings, observable: Mapping[str, str], generation: int = 0, namespace: str = "") -> str:
    """The external id of this version of the record's judgement, for one instance.

    ``<xid_prefix>-judgement-<namespace tag>-<hash>``. The seed holds the
    instance namespace (so two instances never share a judgement), the record
    id, its content hash, the settings that shape the judgement, the
    observable and the *generation* (how many of the record's judgements were
    expired before). It leaves out the export time, so a re-sent batch maps
    to the same XID and CTIA answers ``exists``. The generation keeps an
    indicator that changes back (A, B, A) or returns after a withdrawal from
    matching a judgement that was expired meanwhile. The namespace tag
    (:func:`owner_key`, :func:`xid_owner`) lets the sink tell its own
    judgements from another instance's.
    """
    tlp = "red" if record.tlp == "red" else "amber"
    return xid_from_parts(settings, namespace, record.source_id, record.content_hash, _disposition(record, settings), tlp, observable, generation)


def map_judgement(record: Indicator, settings: CtiaSettings, now: datetime, *, generation: int = 0, namespace: str = "") -> MappedJudgement:
    """Map one live record to its judgement.

    :param now: the export time (aware UTC), the start of ``valid_time``.
    :param generation: see :func:`judgement_xid`.
    :param namespace: the instance namespace (``context.namespace``), see :func:`judgement_xid`.
    :raises Unmappable: the record is skipped with ``str(exc)`` as the reason.
    """
    obs_type, obs_value = normalise_observable(record.type, record.value)
    observable = {"type": obs_type, "value": obs_value}
    start, end = valid_time(record, now, settings.expiration)
    disposition = _disposition(record, settings)
    xid = judgement_xid(record, settings, observable, generation, namespace)
    body: dict[str, Any] = {
        "type": "judgement",
        "id": f"transient:{xid}",
        "observable": observable,
        "disposition": DISPOSITION_NUMBERS[disposition],
        "disposition_name": disposition,
        "confidence": settings.confidence,
        "severity": settings.severity,
        "priority": settings.priority,
        "source": settings.source,
        "tlp": "red" if record.tlp == "red" else "amber",
        "timestamp": format_time(now),
        "valid_time": {"start_time": format_time(start), "end_time": format_time(end)},
        "reason": render_reason(settings.reason, record),
        "external_ids": [xid, record_xid(settings, namespace, record.source_id), instance_xid(settings, namespace)],
    }
    # CTIA lets only the owner read a red judgement, unless these list more readers.
    if settings.authorized_users:
        body["authorized_users"] = list(settings.authorized_users)
    if settings.authorized_groups:
        body["authorized_groups"] = list(settings.authorized_groups)
    link = indicator_link(record, settings.link_host)
    if link:
        body["source_uri"] = link
        body["external_references"] = [
            {"source_name": settings.source, "url": link, "description": f"Indicator {record.source_id} in {record.source}"}
        ]
    return MappedJudgement(record=record, body=body, xid=xid, generation=generation)


# --- feed ------------------------------------------------------------------------


def joins_feed(judgement: MappedJudgement, settings: CtiaSettings) -> bool:
    """Whether the judgement is linked into the feed: its disposition is in ``feed_dispositions``.

    CTIA's feed view lists every valid judgement linked to the feed's
    indicator, whatever its disposition, and firewalls read the feed as a
    blocklist; so the choice is made here, when linking.
    """
    return judgement.body["disposition_name"] in settings.feed_dispositions


def element_of(judgement: MappedJudgement, indicator_id: str, settings: CtiaSettings) -> dict[str, Any]:
    """The ``element-of`` relationship putting a judgement into the feed's indicator."""
    xid = f"{settings.xid_prefix}-relationship-{seed_hash(['element-of', judgement.xid, indicator_id])}"
    return {
        "type": "relationship",
        "id": f"transient:{xid}",
        "relationship_type": "element-of",
        "source_ref": judgement.transient_id,
        "target_ref": indicator_id,
        "source": settings.source,
        "tlp": "amber",
        "external_ids": [xid],
    }


def feed_xid(settings: CtiaSettings, entity: str) -> str:
    """The XID of the feed's ``indicator`` or ``feed`` entity (one per source and feed title)."""
    assert settings.feed is not None
    return f"{settings.xid_prefix}-{entity}-{seed_hash(['feed', entity, settings.source, settings.feed])}"


def feed_indicator(settings: CtiaSettings) -> dict[str, Any]:
    """The indicator every exported judgement is ``element-of``; the feed renders it."""
    assert settings.feed is not None
    xid = feed_xid(settings, "indicator")
    return {
        "type": "indicator",
        "id": f"transient:{xid}",
        "producer": settings.source,
        "title": settings.feed,
        "source": settings.source,
        "indicator_type": ["Private Threat Feed"],
        "description": f"Observables judged by {settings.source} and exported by exportkit.",
        "tlp": "amber",
        "external_ids": [xid],
    }


def feed_body(settings: CtiaSettings, indicator_id: str) -> dict[str, Any]:
    """``POST /ctia/feed`` body: an observables feed over the indicator (its real long id)."""
    assert settings.feed is not None
    return {
        "type": "feed",
        "feed_type": "indicator",
        "output": "observables",
        "indicator_id": indicator_id,
        "title": settings.feed,
        "tlp": "amber",
        "external_ids": [feed_xid(settings, "feed")],
    }


def bundle(
    settings: CtiaSettings,
    *,
    judgements: Sequence[dict[str, Any]] = (),
    indicators: Sequence[dict[str, Any]] = (),
    relationships: Sequence[dict[str, Any]] = (),
) -> dict[str, Any]:
    """A ``POST /ctia/bundle/import`` body; empty entity arrays are left out."""
    body: dict[str, Any] = {"type": "bundle", "source": settings.source}
    for key, items in (("judgements", judgements), ("indicators", indicators), ("relationships", relationships)):
        if items:
            body[key] = list(items)
    return body
