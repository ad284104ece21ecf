"""Record -> CTIA bodies: pure functions, no I/O, no clock (the export time is passed in).

One live indicator becomes one judgement (docs/ctia-mapping.md has the rules for users):

* ``observable``: the record's canonical type when CTIM knows it (identity
  map, :data:`OBSERVABLE_TYPES`) and its value normalised for that type
  (:func:`normalise_observable`); other types and invalid values raise
  :class:`Unmappable` and are skipped, never sent;
* ``disposition``/``disposition_name`` from the settings; Whitelisted is Clean;
* ``confidence``, ``severity``, ``priority``, ``source`` from the settings;
  ``tlp`` ``red`` when the record is red, else ``amber``; ``authorized_users``
  and ``authorized_groups`` from the settings when set (CTIA lets only the
  owner and those read a red judgement);
* ``valid_time`` from the export time to ``expires_at`` or the configured
  expiration, never past 2525-01-01T00:00:00.000Z;
* ``source_uri`` and an external reference linking back to ThreatQ;
* ``reason`` rendered from the template, at most :data:`REASON_MAX` characters
  (room is left for the one expiry reason CTIA appends);
* ``external_ids``: one deterministic XID per judgement *version* and
  instance (:func:`judgement_xid`), so a re-sent batch maps onto what CTIA
  already has and two instances never share a judgement; then the record's
  XID (:func:`record_xid`, the same for every version) and the instance's
  (:func:`instance_xid`), so a state reset can find what the instance holds.
With a feed, only judgements :func:`joins_feed` accepts are linked into it.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from datetime import datetime, timedelta, timezone
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import quote, urlsplit

import attrs
import idna
import jinja2
import jinja2.meta

from exportkit.records import Indicator, format_time
from exportkit_ctia.schema import DISPOSITION_NUMBERS
from exportkit_ctia.settings import DEFAULT_REASON, CtiaSettings, reason_environment
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
from exportkit_ctia.urls import UrlError, normalise_url

__all__ = [
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

#: canonical record types CTIA accepts as observables, with the same name in CTIM
OBSERVABLE_TYPES: frozenset[str] = frozenset(
    {
        "ip", "ipv6", "domain", "url", "email", "md5", "sha1", "sha256", "file_name", "file_path",
        "mac_address", "mutex", "registry_key", "user_agent", "user", "email_subject",
    }
)
#: CTIA's "forever": no time may lie past it
NEVER = datetime(2525, 1, 1, tzinfo=timezone.utc)
EXPIRATION_DAYS: Mapping[str, int | None] = {
    "2 Weeks": 14, "1 Month": 30, "6 Months": 180, "1 Year": 365, "5 Years": 5 * 365, "Never": None,
}
#: CTIA appends the expiry reason to the judgement's reason and refuses the
#: result past CTIM's 1024 characters; so an expiry reason is at most this long ...
EXPIRY_REASON_MAX = 200
#: ... and a judgement's own reason leaves room for it (and the space between)
REASON_MAX = 1024 - EXPIRY_REASON_MAX - 1
_HASH_LENGTHS = {"md5": 32, "sha1": 40, "sha256": 64}
_HEX = re.compile(r"^[0-9a-f]+$")
# An ASCII label: letters, digits, hyphens; underscores too, since real
# malicious hostnames (and _dmarc-style names) carry them.
_LABEL = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$")


class Unmappable(Exception):
    """The record cannot become a judgement; ``str(exc)`` is the reason for the report."""


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


def _normalise_domain(value: str) -> str:
    text = value.strip().rstrip(".").lower()
    if not text or "." not in text:
        raise Unmappable(f"domain {value!r} is not a fully qualified name")
    labels = []
    for label in text.split("."):
        if not label.isascii():
            try:
                label = idna.encode(label, uts46=True).decode("ascii")
            except idna.IDNAError as exc:
                raise Unmappable(f"domain {value!r} cannot be IDNA-encoded: {exc}") from None
        if not _LABEL.fullmatch(label):
            raise Unmappable(f"domain {value!r} has an invalid label {label!r}")
        labels.append(label)
    if labels[-1].isdigit():
        raise Unmappable(f"domain {value!r} ends in a numeric label (an IP address is not a domain)")
    result = ".".join(labels)
    if len(result) > 253:
        raise Unmappable(f"domain {value!r} is longer than 253 characters")
    return result


def _normalise_ip(kind: str, value: str) -> tuple[str, str]:
    try:
        address = ipaddress.ip_address(value.strip())
    except ValueError:
        raise Unmappable(f"{value!r} is not a valid IP address") from None
    # The address family decides the CTIM type, so lookups by observable find it.
    return ("ip" if address.version == 4 else "ipv6"), address.compressed


def _normalise_url(value: str) -> str:
    # RFC 3986: percent-encode what a URL may not hold (spaces, unicode, |, ^, ...); skip only non-URLs.
    try:
        return normalise_url(value)
    except UrlError as exc:
        raise Unmappable(str(exc)) from None


def _normalise_email(value: str) -> str:
    text = value.strip()
    local, at, domain = text.rpartition("@")
    if not at or not local or not domain or any(ch.isspace() for ch in text):
        raise Unmappable(f"email {value!r} is not local@domain")
    try:
        return f"{local}@{_normalise_domain(domain)}"
    except Unmappable as exc:
        raise Unmappable(f"email {value!r}: {exc}") from None


def unsupported_type(kind: str) -> str:
    """Why a record of canonical type ``kind`` is skipped when CTIM has no observable type for it."""
    return f"type {kind} is not an observable type CTIA accepts"


def normalise_observable(kind: str, value: str) -> tuple[str, str]:
    """The CTIM observable ``(type, value)`` for a record's canonical type and value.

    :raises Unmappable: CTIA has no such observable type, or the value is not
        valid for its type.
    """
    if kind not in OBSERVABLE_TYPES:
        raise Unmappable(unsupported_type(kind))
    if kind in ("ip", "ipv6"):
        return _normalise_ip(kind, value)
    if kind in _HASH_LENGTHS:
        text = value.strip().lower()
        if len(text) != _HASH_LENGTHS[kind] or not _HEX.fullmatch(text):
            raise Unmappable(f"{kind} {value!r} is not {_HASH_LENGTHS[kind]} hexadecimal digits")
        return kind, text
    if kind == "domain":
        return kind, _normalise_domain(value)
    if kind == "url":
        return kind, _normalise_url(value)
    if kind == "email":
        return kind, _normalise_email(value)
    text = value.strip()
    if not text:
        raise Unmappable(f"{kind} value is empty")
    return kind, text


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


@attrs.frozen
class _ReasonTemplate:
    """A compiled reason template, the variables it reads, and the texts it rendered for their values.

    A template sees only the variables it is given, so its text is a function of
    the values of those it names: records alike in them (the default template
    names score, status and tags) share one rendering instead of paying for
    jinja2 each time. At most :data:`_RENDERED_KEPT` texts are kept, each for values
    of at most :data:`_KEY_CHARS_KEPT` characters, so they take a few MiB at most.
    """

    template: jinja2.Template
    names: tuple[str, ...]
    rendered: dict[tuple[Any, ...], str] = attrs.field(factory=dict)


_RENDERED_KEPT = 4096
_KEY_CHARS_KEPT = 2048


@functools.lru_cache(maxsize=16)
def _template(text: str) -> _ReasonTemplate:
    environment = reason_environment()
    names = tuple(sorted(jinja2.meta.find_undeclared_variables(environment.parse(text))))
    return _ReasonTemplate(environment.from_string(text), names)


def _frozen(value: Any) -> Any:
    """A hashable stand-in for a template variable's value; values of different types never compare equal."""
    if isinstance(value, list):
        return ("list", tuple(_frozen(v) for v in value))
    if isinstance(value, dict):
        return ("dict", tuple((k, _frozen(v)) for k, v in value.items()))
    return (type(value).__name__, value)


def _score_variable(record: Indicator) -> Any:
    score: Any = record.score
    if score is not None and float(score).is_integer():
        score = int(score)
    return score


def _attributes_variable(record: Indicator) -> dict[str, list[str]]:
    attributes: dict[str, list[str]] = {}
    for attribute in record.attributes:
        attributes.setdefault(attribute.name, []).append(attribute.value)
    return attributes


#: each variable a reason template can use, and how it is read from a record
_REASON_VARIABLES: dict[str, Callable[[Indicator], Any]] = {
    "score": _score_variable, "status": lambda r: r.status, "tags": lambda r: list(r.tags), "type": lambda r: r.type,
    "type_name": lambda r: r.type_name, "value": lambda r: r.value, "source_id": lambda r: r.source_id,
    "source": lambda r: r.source, "sources": lambda r: list(r.sources), "tlp": lambda r: r.tlp,
    "description": lambda r: r.description, "attributes": _attributes_variable,
    "expires_at": lambda r: format_time(r.expires_at), "link": lambda r: r.link,
}


def reason_variables(record: Indicator) -> dict[str, Any]:
    """What a reason template can use (the keys of ``settings.REASON_SAMPLE``)."""
    return {name: read(record) for name, read in _REASON_VARIABLES.items()}


def _cut(text: str) -> str:
    return text if len(text) <= REASON_MAX else text[: REASON_MAX - 1] + "\u2026"


def _default_reason(record: Indicator) -> str:
    """:data:`~exportkit_ctia.settings.DEFAULT_REASON` rendered without jinja2 (a fifth of the cost; most
    instances keep the default). A test holds it to what the template renders."""
    text = f"ThreatQ score {_score_variable(record)}, status {record.status}"
    if record.tags:
        text += ", tags: " + ", ".join(record.tags)
    return text.strip()


def render_reason(template: str, record: Indicator) -> str:
    """Render the reason template for ``record``, cut to :data:`REASON_MAX` characters.

    :raises Unmappable: the template failed for this record.
    """
    if template == DEFAULT_REASON:
        return _cut(_default_reason(record))
    compiled = _template(template)
    key = tuple(_frozen(_REASON_VARIABLES[name](record)) for name in compiled.names if name in _REASON_VARIABLES)
    text = compiled.rendered.get(key)
    if text is not None:
        return text
    try:
        text = compiled.template.render(**reason_variables(record)).strip()
    except jinja2.TemplateError as exc:
        raise Unmappable(f"the reason template failed: {exc}") from None
    text = _cut(text)
    if len(repr(key)) <= _KEY_CHARS_KEPT:  # values that vary per record (a long description) are not kept
        if len(compiled.rendered) >= _RENDERED_KEPT:
            compiled.rendered.clear()
        compiled.rendered[key] = text
    return text


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
