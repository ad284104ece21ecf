"""The canonical indicator record and its vocabularies.

Every source turns its own data into :class:`Indicator` through a named
constructor; every sink receives only these records. Records are frozen and
shared between sinks, so no sink can change what another one sends. A sink
that needs a changed record derives one with :func:`attrs.evolve`.

Time values are aware UTC datetimes. The JSON form (:meth:`Indicator.to_dict`,
:meth:`Indicator.from_dict`) is what the stdout sink's ``jsonl`` format writes
and what the ``file`` source reads.
"""

from __future__ import annotations

import functools
import hashlib
import json
from datetime import datetime, timezone, tzinfo
from collections.abc import Iterable, Mapping
from typing import Any

import attrs
import orjson

from exportkit.jsontext import compact_json

__all__ = [
    "Attribute",
    "Indicator",
    "TLPS",
    "CANONICAL_TYPES",
    "STATUS_EXPIRED",
    "STATUS_WHITELISTED",
    "parse_time",
    "format_time",
    "id_sort_key",
]

#: TLP levels from most to least restrictive.
TLPS: tuple[str, ...] = ("red", "amber", "green", "white")
_TLP_SET = frozenset(TLPS)

#: Every canonical type a record's :attr:`Indicator.type` can hold (public as
#: ``exportkit.CANONICAL_TYPES``; sinks map from these). Where CTIM has a name
#: for the observable we use it, so sinks that speak CTIM map one to one;
#: ``other`` holds types no source table knows (the original name stays in
#: :attr:`Indicator.type_name`).
#: Each source maps its own type names to these (ThreatQ's table is
#: :data:`exportkit.threatq.vocabulary.THREATQ_TYPES`).
CANONICAL_TYPES: frozenset[str] = frozenset({
    "asn",
    "binary_string",
    "cidr",
    "cve",
    "domain",
    "email",
    "email_attachment",
    "email_subject",
    "file_mapping",
    "file_name",
    "file_path",
    "fuzzy_hash",
    "gost_hash",
    "hash_ion",
    "ip",
    "ipv6",
    "mac_address",
    "md5",
    "mutex",
    "password",
    "registry_key",
    "service_name",
    "sha1",
    "sha256",
    "sha384",
    "sha512",
    "string",
    "url",
    "url_path",
    "user",
    "user_agent",
    "x509_serial",
    "x509_subject",
    "x_mailer",
    "other",
})

#: Status names with a meaning to the engine, compared case-insensitively.
#: They are ThreatQ's names; another source maps its own statuses to them.
STATUS_EXPIRED = "Expired"
STATUS_WHITELISTED = "Whitelisted"


def parse_time(value: Any, naive_tz: tzinfo = timezone.utc) -> datetime | None:
    """Parse a timestamp into an aware UTC datetime; ``None`` and ``""`` give ``None``.

    Accepts datetimes, ISO 8601 strings with or without a zone or ``Z``, and
    ThreatQ's ``YYYY-MM-DD HH:MM:SS``. A value without a zone is a wall-clock
    time in ``naive_tz`` (UTC unless a source says otherwise).

    :raises ValueError: the value is not a timestamp.
    """
    if value is None or value == "":
        return None
    if type(value) is datetime and value.tzinfo is timezone.utc:  # already canonical (converters see these often)
        return value
    if isinstance(value, datetime):
        dt = value
    elif isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        dt = datetime.fromisoformat(text)
    else:
        raise ValueError(f"not a timestamp: {value!r}")
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=naive_tz)
    return dt.astimezone(timezone.utc)


def format_time(value: datetime | None) -> str | None:
    """Format an aware datetime as ISO 8601 UTC with milliseconds and ``Z`` (CTIM style)."""
    if value is None:
        return None
    return _format_time(value)


# A run writes its export time and its default end into every judgement: those are formatted once.
@functools.lru_cache(maxsize=256)
def _format_time(value: datetime) -> str:
    return value.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def id_sort_key(source_id: str) -> tuple[int, int, str]:
    """Order ids as the source does: numbers numerically, before any other string."""
    if source_id.isdigit():
        return (0, int(source_id), "")
    return (1, 0, source_id)


def _required_time(value: Any) -> datetime:
    parsed = parse_time(value)
    if parsed is None:
        raise ValueError("a timestamp is required")
    return parsed


def _tlp(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if value in _TLP_SET:
        return value  # type: ignore[no-any-return]
    folded = str(value).strip().lower()
    if folded == "clear":  # TLP 2.0 renamed white to clear
        folded = "white"
    if folded not in TLPS:
        raise ValueError(f"tlp must be one of {', '.join(TLPS)} or empty (got {value!r})")
    return folded


def _score(value: Any) -> float | None:
    if value is None or type(value) is float:
        return value
    if value == "":
        return None
    if isinstance(value, bool):
        raise ValueError(f"score must be a number (got {value!r})")
    return float(value)


def _strings(values: Iterable[Any] | None) -> tuple[str, ...]:
    if values is None:
        return ()
    if type(values) is tuple and all(type(v) is str for v in values):
        return values
    if isinstance(values, str):
        raise ValueError("expected a list of strings, got one string")
    return tuple(str(v) for v in values)


@attrs.frozen
class Attribute:
    """One name/value attribute of an indicator (ThreatQ keeps many per indicator)."""

    name: str = attrs.field(converter=str)
    value: str = attrs.field(converter=str)


def _attributes(values: Iterable[Any] | None) -> tuple[Attribute, ...]:
    if values is None:
        return ()
    if type(values) is tuple and all(type(v) is Attribute for v in values):
        return values
    out = []
    for item in values:
        if isinstance(item, Attribute):
            out.append(item)
        elif isinstance(item, Mapping):
            out.append(Attribute(name=item["name"], value=item.get("value", "")))
        else:
            name, value = item
            out.append(Attribute(name=name, value=value))
    return tuple(out)


#: fields :meth:`Indicator.create` turns into strings
_STRING_FIELDS = ("source_id", "value", "type_name", "status", "source")

#: Fields left out of :attr:`Indicator.content_hash`: they change without
#: changing what a sink would send (ThreatQ bumps ``updated_at`` on touches).
HASH_EXCLUDED_FIELDS = frozenset({"updated_at", "created_at"})


@attrs.frozen(kw_only=True)
class Indicator:
    """One indicator, as every sink sees it.

    Build one with :meth:`create` (keyword arguments, converted and checked)
    or :meth:`from_dict` (the JSON form); sources add their own named
    constructors in their modules (``exportkit.threatq.normalize``).
    """

    #: name of the source system, e.g. ``"ThreatQ"``
    source: str
    #: the indicator's id in the source, as a string
    source_id: str
    #: the value, as the source holds it (sinks normalise it for their target)
    value: str
    #: canonical type, one of :data:`CANONICAL_TYPES`
    type: str = attrs.field(validator=attrs.validators.in_(CANONICAL_TYPES))
    #: the source's own type name ("IP Address", "FQDN", ...)
    type_name: str
    #: status name in the source ("Active", "Review", "Whitelisted", "Expired", ...)
    status: str
    #: effective score 0..10, or None when the source has none
    score: float | None = attrs.field(default=None, converter=_score)
    #: the most restrictive TLP among the indicator's sources, or None
    tlp: str | None = attrs.field(default=None, converter=_tlp)
    tags: tuple[str, ...] = attrs.field(default=(), converter=_strings)
    attributes: tuple[Attribute, ...] = attrs.field(default=(), converter=_attributes)
    #: names of the sources (feeds, users) that reported the indicator
    sources: tuple[str, ...] = attrs.field(default=(), converter=_strings)
    #: plain text (sources reduce HTML to text)
    description: str = ""
    created_at: datetime | None = attrs.field(default=None, converter=parse_time)
    updated_at: datetime = attrs.field(converter=_required_time)
    expires_at: datetime | None = attrs.field(default=None, converter=parse_time)
    #: a link back to the indicator in the source's UI
    link: str | None = None

    @classmethod
    def create(cls, **fields: Any) -> Indicator:
        """Build a record from keyword arguments, converting ids and values to strings.

        :raises ValueError, TypeError: a field is missing or has no valid value.
        """
        for key in _STRING_FIELDS:
            value = fields.get(key)
            if value is not None and type(value) is not str:
                fields[key] = str(value)
        return cls(**fields)

    @classmethod
    def from_canonical(
        cls, *, source: str, source_id: str, value: str, type: str, type_name: str, status: str, score: float | None,
        tlp: str | None, tags: tuple[str, ...], attributes: tuple[Attribute, ...], sources: tuple[str, ...],
        description: str, created_at: datetime | None, updated_at: datetime, expires_at: datetime | None, link: str | None,
    ) -> Indicator:
        """Build a record from values already in the form :meth:`create` gives them, without converting them.

        For a source's normaliser, once per indicator: strings, tuples of strings
        and of :class:`Attribute`, a float score or ``None``, a TLP of
        :data:`TLPS` or ``None``, aware UTC datetimes. The result equals what
        :meth:`create` returns for the same values (tests hold the ThreatQ
        normaliser to that); only the type is checked here. About a third of the
        cost of :meth:`create`, which converts and checks every field.

        :raises ValueError: ``type`` is not one of :data:`CANONICAL_TYPES`.
        """
        if type not in CANONICAL_TYPES:
            raise ValueError(f"type must be one of the canonical types (got {type!r})")
        record = object.__new__(cls)
        put = object.__setattr__  # the class is frozen; this is how its own __init__ sets fields
        put(record, "source", source)
        put(record, "source_id", source_id)
        put(record, "value", value)
        put(record, "type", type)
        put(record, "type_name", type_name)
        put(record, "status", status)
        put(record, "score", score)
        put(record, "tlp", tlp)
        put(record, "tags", tags)
        put(record, "attributes", attributes)
        put(record, "sources", sources)
        put(record, "description", description)
        put(record, "created_at", created_at)
        put(record, "updated_at", updated_at)
        put(record, "expires_at", expires_at)
        put(record, "link", link)
        return record

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Indicator:
        """Build a record from its JSON form (:meth:`to_dict`).

        Unknown keys are refused, so a typo in a hand-made file is not silently
        dropped.

        :raises ValueError: a key is unknown, missing, or has an invalid value.
        """
        known = {f.name for f in attrs.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown field(s): {', '.join(unknown)}")
        missing = sorted(
            f.name for f in attrs.fields(cls) if f.default is attrs.NOTHING and f.name not in data
        )
        if missing:
            raise ValueError(f"missing field(s): {', '.join(missing)}")
        try:
            return cls.create(**dict(data))
        except TypeError as exc:  # attrs reports wrong argument shapes as TypeError
            raise ValueError(str(exc)) from None

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form: plain types, times as ISO 8601 UTC strings (keys in field order)."""
        # Spelled out rather than looped over attrs.fields: this runs for every record
        # (content_hash), and the order must stay the field order.
        return {
            "source": self.source, "source_id": self.source_id, "value": self.value, "type": self.type,
            "type_name": self.type_name, "status": self.status, "score": self.score, "tlp": self.tlp,
            "tags": list(self.tags), "attributes": [{"name": a.name, "value": a.value} for a in self.attributes],
            "sources": list(self.sources), "description": self.description,
            "created_at": format_time(self.created_at), "updated_at": format_time(self.updated_at),
            "expires_at": format_time(self.expires_at), "link": self.link,
        }

    @functools.cached_property
    def content_hash(self) -> str:
        """A stable hash of everything a sink could send; equal records, equal hash.

        It leaves out :data:`HASH_EXCLUDED_FIELDS`, so a record that was only
        touched is not sent again. Computed once per record (records are
        immutable): the engine compares it with the holdings and stores it, and
        sinks use it too. The hash is stored with every holding, so its formula
        never changes: SHA-256 of the JSON form without the excluded fields,
        keys sorted, compact, non-ASCII as is (:func:`_hash_text`), first 32 hex digits.
        """
        return hashlib.sha256(_hash_text(self)).hexdigest()[:32]

    @property
    def is_whitelisted(self) -> bool:
        """True when the source says the indicator poses no risk."""
        return self.status.strip().casefold() == STATUS_WHITELISTED.casefold()

    def is_expired(self, now: datetime) -> bool:
        """True when the status is Expired or ``expires_at`` lies at or before ``now``."""
        if self.status.strip().casefold() == STATUS_EXPIRED.casefold():
            return True
        return self.expires_at is not None and self.expires_at <= now

    @property
    def position(self) -> tuple[datetime, tuple[int, int, str]]:
        """Sort key of the source's order, ``(updated_at, id)``; checkpoints compare these.

        Numeric ids compare as numbers (ThreatQ sorts ``id`` numerically).
        """
        return (self.updated_at, id_sort_key(self.source_id))


def _hash_fields(record: Indicator) -> dict[str, Any]:
    """The JSON form less :data:`HASH_EXCLUDED_FIELDS`, built with its keys already in sorted order."""
    return {
        "attributes": [{"name": a.name, "value": a.value} for a in record.attributes],
        "description": record.description, "expires_at": format_time(record.expires_at), "link": record.link,
        "score": record.score, "source": record.source, "source_id": record.source_id, "sources": list(record.sources),
        "status": record.status, "tags": list(record.tags), "tlp": record.tlp, "type": record.type,
        "type_name": record.type_name, "value": record.value,
    }


def _reference_hash_text(record: Indicator) -> bytes:
    """The hash's text by its definition (slow, exact for every value)."""
    data = record.to_dict()
    for name in HASH_EXCLUDED_FIELDS:
        data.pop(name, None)
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _hash_text(record: Indicator) -> bytes:
    """The bytes :attr:`Indicator.content_hash` hashes: :func:`_reference_hash_text`, about 4x faster.

    orjson writes compact, unescaped-Unicode JSON exactly as ``json.dumps`` does
    here, except for floats it spells differently (``1e+16`` is ``1e16`` there,
    NaN is ``null``) and strings it refuses (lone surrogates): those take the
    reference way, so every hash stays what the first release computed.
    """
    score = record.score
    if score is not None and orjson.dumps(score) != repr(score).encode():
        return _reference_hash_text(record)
    return compact_json(_hash_fields(record))  # its keys are in sorted order already
