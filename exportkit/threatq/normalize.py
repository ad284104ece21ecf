"""ThreatQ indicator JSON -> canonical :class:`~exportkit.records.Indicator`.

:func:`indicator_from_threatq` is the named constructor for ThreatQ data. It
never raises for bad data: an indicator that cannot become a record comes
back as :class:`~exportkit.sources.BadRecord` with the reason, so the engine
dead-letters it and the run goes on.

Rules (the ones users rely on):

* type: the ThreatQ type name (from the embedded ``type`` object, a plain
  name string in ``fields`` mode, or ``type_id`` looked up in the catalogue
  from ``/api/indicator/types``) -> :func:`~exportkit.threatq.vocabulary.canonical_type`;
  unknown names become ``other`` and keep their name in ``type_name``.
* status: likewise, from ``status`` or ``status_id`` via ``/api/indicator/statuses``.
* score: ``manual_score`` when set, else ``generated_score``; a plain number
  is taken as is.
* TLP: the most restrictive among the sources (red < amber < green < white),
  by ``tlp_id`` (1..4) or ``tlp_name``; CLEAR is white; none -> the
  configured ``unknown_tlp`` (amber unless set; ``None`` leaves it unknown).
* times: wall-clock times of the appliance's zone, turned into aware UTC;
  the record's ``updated_at`` is ThreatQ's ``touched_at`` (the last change
  of anything about the indicator, its sources and attributes included;
  ``updated_at`` when there is none), the time the pull is windowed and
  sorted by. Link ``https://<link_host>/indicators/<id>/details``.
* description: HTML reduced to plain text (entities unescaped, white space collapsed).
* tags, sources: names; attributes: name/value pairs.
* value: as ThreatQ holds it, only surrounding white space stripped (sinks
  normalise values for their own targets).
"""

from __future__ import annotations

import functools
import html
import re
from datetime import timezone, tzinfo
from html.parser import HTMLParser
from collections.abc import Iterable, Mapping
from typing import Any

from exportkit.records import Attribute, Indicator
from exportkit.threatq.vocabulary import canonical_type
from exportkit.sources import BadRecord
from exportkit.threatq.times import parse_tq_time

__all__ = ["indicator_from_threatq", "effective_score", "most_restrictive_tlp", "html_to_text", "TLP_BY_ID"]

#: ThreatQ's TLP ids
TLP_BY_ID: Mapping[int, str] = {1: "red", 2: "amber", 3: "green", 4: "white"}
_TLP_RANK = {"red": 1, "amber": 2, "green": 3, "white": 4, "clear": 4}
_BLOCK_TAGS = frozenset({"p", "div", "br", "li", "ul", "ol", "tr", "td", "th", "table", "h1", "h2", "h3", "h4", "h5", "h6", "pre", "blockquote", "hr"})
_WS = re.compile(r"\s+")


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag in ("script", "style"):
            self._skip += 1
        elif tag in _BLOCK_TAGS:
            self.parts.append(" ")  # keep words of adjacent blocks apart

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style") and self._skip:
            self._skip -= 1
        elif tag in _BLOCK_TAGS:
            self.parts.append(" ")

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def html_to_text(text: Any) -> str:
    """Reduce an HTML fragment to plain text: tags dropped, entities unescaped, white space collapsed."""
    if text is None:
        return ""
    text = str(text)
    # Feeds write the same few descriptions on thousands of indicators, and parsing HTML
    # costs more than the rest of a record's normalisation: each short text is parsed
    # once. Long ones are parsed each time, so the cache stays small (4,096 x 4 KiB).
    return _remembered_html_to_text(text) if len(text) <= _REMEMBERED_CHARS else _html_to_text(text)


_REMEMBERED_CHARS = 4096


def _html_to_text(text: str) -> str:
    if "<" not in text and "&" not in text:  # plain text (most descriptions): nothing to parse or unescape
        return _WS.sub(" ", text).strip()
    parser = _TextExtractor()
    try:
        parser.feed(str(text))
        parser.close()
        out = "".join(parser.parts)  # the parser has already unescaped entities (convert_charrefs)
    except Exception:  # html.parser is lenient, but a description must never stop a record
        out = html.unescape(re.sub(r"<[^>]*>", " ", str(text)))
    # Unescaped exactly once: "&amp;lt;script&amp;gt;" is the text "&lt;script&gt;", not a tag.
    return _WS.sub(" ", out).strip()


_remembered_html_to_text = functools.lru_cache(maxsize=4096)(_html_to_text)


def effective_score(score: Any) -> float | None:
    """``manual_score`` when set, else ``generated_score``; a plain number as is; else ``None``.

    :raises ValueError: the score is not a number.
    """
    if score is None or score == "":
        return None
    if isinstance(score, (dict, Mapping)):
        manual = score.get("manual_score")
        chosen = manual if manual not in (None, "") else score.get("generated_score")
        if chosen in (None, ""):
            return None
        return _number(chosen)
    return _number(score)


def _number(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError(f"score is not a number: {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"score is not a number: {value!r}") from None


def _tlp_of(source: Mapping[str, Any]) -> str | None:
    tlp_id = source.get("tlp_id")
    if tlp_id not in (None, ""):
        try:
            name = TLP_BY_ID.get(int(tlp_id))
        except (TypeError, ValueError):
            name = None
        if name:
            return name
    for key in ("tlp_name", "tlp"):
        value = source.get(key)
        if isinstance(value, (dict, Mapping)):  # {"id": 2, "name": "AMBER"} on some versions
            value = value.get("name")
        if isinstance(value, str) and value.strip().lower() in _TLP_RANK:
            folded = value.strip().lower()
            return "white" if folded == "clear" else folded
    return None


def most_restrictive_tlp(sources: Iterable[Any]) -> str | None:
    """The most restrictive TLP among ``sources`` (red < amber < green < white), or ``None``."""
    found = [t for t in (_tlp_of(s) for s in sources if isinstance(s, (dict, Mapping))) if t]
    if not found:
        return None
    return min(found, key=_TLP_RANK.__getitem__)


def _name(value: Any, catalogue: Mapping[int, str], ident: Any) -> str | None:
    """A name from an embedded object, a plain string, or an id looked up in a catalogue."""
    if isinstance(value, (dict, Mapping)) and value.get("name"):
        return str(value["name"])
    if isinstance(value, str) and value.strip():
        return value
    for candidate in (ident, value.get("id") if isinstance(value, (dict, Mapping)) else None):
        if candidate in (None, ""):
            continue
        try:
            name = catalogue.get(int(candidate))
        except (TypeError, ValueError):
            name = None
        if name:
            return name
    return None


def _names(items: Any) -> tuple[str, ...]:
    if not items:
        return ()
    if isinstance(items, (dict, Mapping)):  # an empty page of a sub-resource comes back as {}
        items = list(items.values())
    out: list[str] = []
    for item in items:
        name = item if type(item) is str else item.get("name") if isinstance(item, (dict, Mapping)) else item
        if name is not None:
            text = (name if type(name) is str else str(name)).strip()
            if text:
                out.append(text)
    return tuple(out)


def _attributes(items: Any) -> tuple[Attribute, ...]:
    if not items or isinstance(items, (str, Mapping)):
        return ()
    out = []
    for item in items:
        if isinstance(item, (dict, Mapping)) and item.get("name") is not None:
            value = item.get("value")
            out.append(Attribute(name=str(item["name"]), value="" if value is None else str(value)))
    return tuple(out)


def indicator_from_threatq(
    raw: Mapping[str, Any],
    *,
    types: Mapping[int, str],
    statuses: Mapping[int, str],
    link_host: str | None,
    source_name: str = "ThreatQ",
    tz: tzinfo = timezone.utc,
    time_field: str = "touched_at",
    unknown_tlp: str | None = "amber",
) -> Indicator | BadRecord:
    """Turn one ThreatQ indicator (as served by ``/api/indicators/query``) into a record.

    :param raw: the indicator JSON.
    :param types: type id -> name, from ``/api/indicator/types``.
    :param statuses: status id -> name, from ``/api/indicator/statuses``.
    :param link_host: host name for the link back to ThreatQ (no link when ``None``).
    :param source_name: :attr:`Indicator.source`.
    :param tz: the appliance's time zone (ThreatQ's times carry none).
    :param time_field: the ThreatQ time that becomes the record's ``updated_at``
        (the pull's window field; ``updated_at`` stands in when it is missing).
    :param unknown_tlp: the TLP when no source gives one (``None``: unknown).
    :returns: the record, or a :class:`BadRecord` naming what is wrong; never raises for bad data.
    """
    if not isinstance(raw, (dict, Mapping)):
        return BadRecord(None, f"not an indicator object: {type(raw).__name__}", None)
    raw_id = raw.get("id")
    source_id = None if raw_id in (None, "") else str(raw_id).strip()
    try:
        return _build(raw, source_id, types=types, statuses=statuses, link_host=link_host, source_name=source_name,
                      tz=tz, time_field=time_field, unknown_tlp=unknown_tlp)
    except (ValueError, TypeError, KeyError) as exc:
        return BadRecord(source_id, str(exc) or type(exc).__name__, dict(raw))


def _build(
    raw: Mapping[str, Any],
    source_id: str | None,
    *,
    types: Mapping[int, str],
    statuses: Mapping[int, str],
    link_host: str | None,
    source_name: str,
    tz: tzinfo,
    time_field: str,
    unknown_tlp: str | None,
) -> Indicator:
    if not source_id:
        raise ValueError("indicator has no id")
    value = raw.get("value")
    if value is None:
        raise ValueError("indicator has no value")
    value = str(value).strip()
    if not value:
        raise ValueError("indicator value is empty")
    type_name = _name(raw.get("type"), types, raw.get("type_id"))
    if not type_name:
        raise ValueError(f"indicator type unknown (type_id {raw.get('type_id')!r} is not in /api/indicator/types)")
    status = _name(raw.get("status"), statuses, raw.get("status_id")) or ""
    changed = raw.get(time_field)
    if changed in (None, ""):
        changed = raw.get("updated_at")
    if changed in (None, ""):
        raise ValueError(f"indicator has no {time_field}")
    try:
        updated_at = parse_tq_time(changed, tz)
        created_at = parse_tq_time(raw.get("created_at"), tz)
        expires_at = parse_tq_time(raw.get("expires_at"), tz)
    except ValueError as exc:
        raise ValueError(f"bad timestamp: {exc}") from None
    if updated_at is None:  # not after the checks above; says so to the type checker
        raise ValueError(f"indicator has no {time_field}")
    # Every value below is canonical already (strings, tuples, UTC datetimes, a float score).
    return Indicator.from_canonical(
        source=source_name,
        source_id=source_id,
        value=value,
        type=canonical_type(type_name),
        type_name=type_name.strip(),
        status=status.strip(),
        score=effective_score(raw.get("score")),
        tlp=most_restrictive_tlp(raw.get("sources") or ()) or unknown_tlp,
        tags=_names(raw.get("tags")),
        attributes=_attributes(raw.get("attributes")),
        sources=_names(raw.get("sources")),
        description=html_to_text(raw.get("description")),
        created_at=created_at,
        updated_at=updated_at,
        expires_at=expires_at,
        link=f"https://{link_host}/indicators/{source_id}/details" if link_host else None,
    )
