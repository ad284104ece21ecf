"""Data Collections: find one by name and read its saved query; the type and status catalogues.

ThreatQ keeps a Data Collection as a saved search whose ``json`` holds an
``api_query`` (``criteria`` + ``filters``); :mod:`exportkit.threatq.paging`
runs it. Collections belong to the user who made them: another user sees
one only when it is shared with them.

The names :func:`iter_indicators`, :func:`with_window` and
:func:`format_tq_time` are re-exported from :mod:`exportkit.threatq.paging`
and :mod:`exportkit.threatq.times`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import attrs

from exportkit.errors import SourceError
from exportkit.jsontext import JSONTooDeep, loads_json, nesting_depth
from exportkit.threatq.paging import DEFAULT_FIELDS, TIME_FIELDS, data_list, iter_indicators, with_window
from exportkit.threatq.times import format_tq_time

__all__ = [
    "Collection",
    "find_collection",
    "list_collections",
    "load_catalogues",
    "with_window",
    "iter_indicators",
    "format_tq_time",
    "DEFAULT_FIELDS",
    "TIME_FIELDS",
]

_SEARCH_PAGE = 200
log = logging.getLogger("exportkit.source.threatq")


@attrs.frozen
class Collection:
    """A Data Collection: its id, name, hash (if the server has one) and saved ``api_query``."""

    id: int | str
    name: str
    api_query: Mapping[str, Any]
    hash: str | None = None


def list_collections(client: Any) -> list[dict[str, Any]]:
    """Every saved search the user can see (``GET /api/search/query``), each once.

    Follows ``limit``/``offset`` paging when the server pages. It stops at an
    empty page, at ``total``, at a page shorter than asked, and at a page that
    brings no collection not seen before: a server that ignores ``limit`` and
    ``offset`` and sends no ``total`` answers everything every time, and
    asking again would never end.
    """
    out: dict[Any, dict[str, Any]] = {}
    offset = 0
    while True:
        body = client.get("/api/search/query", params={"limit": _SEARCH_PAGE, "offset": offset})
        page = [item for item in data_list(body) if isinstance(item, Mapping)]
        new = 0
        for item in page:
            key = item.get("id", item.get("name"))
            if key not in out:
                out[key] = dict(item)
                new += 1
        total = body.get("total") if isinstance(body, Mapping) else None
        offset += len(page)
        if page and not new and len(page) == _SEARCH_PAGE:
            log.warning("ThreatQ answered the same Data Collections for a new offset; only the first %d could be read",
                        len(out))
        if (not new or len(page) < _SEARCH_PAGE or len(page) > _SEARCH_PAGE
                or (isinstance(total, int) and offset >= total)):
            return list(out.values())


#: deeper saved queries are refused (real ones nest a few levels)
_QUERY_MAX_DEPTH = 64


def _api_query(entry: Mapping[str, Any]) -> dict[str, Any]:
    raw = entry.get("json")
    if isinstance(raw, str):
        try:
            raw = loads_json(raw) if raw.strip() else {}
        except JSONTooDeep:
            raise SourceError(f"Data Collection {entry.get('name')!r} has a saved query nested too deeply to read") from None
        except ValueError:
            raise SourceError(f"Data Collection {entry.get('name')!r} has a saved query that is not JSON") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise SourceError(f"Data Collection {entry.get('name')!r} has an unreadable saved query")
    if nesting_depth(raw, _QUERY_MAX_DEPTH) > _QUERY_MAX_DEPTH:
        # Filters are copied and walked recursively below; a hostile query must not exhaust the stack.
        raise SourceError(f"Data Collection {entry.get('name')!r} has a saved query nested too deeply to read (more than {_QUERY_MAX_DEPTH} levels)")
    query = raw.get("api_query", raw if ("criteria" in raw or "filters" in raw) else {})
    if not isinstance(query, Mapping):
        raise SourceError(f"Data Collection {entry.get('name')!r} has an unreadable api_query")
    return {"criteria": dict(query.get("criteria") or {}), "filters": dict(query.get("filters") or {})}


def find_collection(client: Any, name: str, *, user: str | None = None) -> Collection:
    """The Data Collection named exactly ``name`` (case and spacing as in ThreatQ).

    :param user: who is signed in, for the message when there is none.
    :raises SourceError: none matches; the message lists the names this user
        can see and says that collections are private to their owner unless shared.
    """
    entries = list_collections(client)
    for entry in entries:
        if str(entry.get("name", "")) == name:
            return Collection(id=entry.get("id", 0), name=name, api_query=_api_query(entry), hash=entry.get("hash"))
    names = sorted(str(e.get("name")) for e in entries if e.get("name") is not None)
    close = [n for n in names if n.strip().casefold() == name.strip().casefold()]
    hint = f" (did you mean {close[0]!r}? names are matched exactly)" if close else ""
    listing = ", ".join(repr(n) for n in names) if names else "none"
    who = user or "the signed-in user"
    raise SourceError(
        f"ThreatQ has no Data Collection named {name!r} that {who} can see{hint}; existing collections: {listing}. "
        "A Data Collection is private to the user who saved it unless it is shared: share it with this user "
        "in ThreatQ, or sign in as its owner"
    )


def load_catalogues(client: Any) -> tuple[dict[int, str], dict[int, str]]:
    """``(types, statuses)``: id -> name, from ``/api/indicator/types`` and ``/api/indicator/statuses``.

    Ids differ between ThreatQ installations, so they are never hard-coded.
    """

    def catalogue(path: str) -> dict[int, str]:
        out: dict[int, str] = {}
        for item in data_list(client.get(path, params={"limit": 1000})):
            if isinstance(item, Mapping) and item.get("id") is not None and item.get("name"):
                try:
                    out[int(item["id"])] = str(item["name"])
                except (TypeError, ValueError):
                    continue
        if not out:
            raise SourceError(f"ThreatQ {path} returned no entries")
        return out

    return catalogue("/api/indicator/types"), catalogue("/api/indicator/statuses")
