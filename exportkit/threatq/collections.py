"""Data Collections: find one by name, run its saved query, page through the result safely.

ThreatQ keeps a Data Collection as a saved search whose ``json`` holds an
``api_query`` (``criteria`` + ``filters``). We run that query through
``POST /api/indicators/query`` with an added ``updated_at`` window, sorted by
``updated_at`` (ties in ``id`` order here).

Why keyset paging: plain ``offset`` paging over a set sorted by
``updated_at`` loses items. When an indicator on an earlier page is changed
while we page, it moves to the end, every later item shifts left by one, and
the item at the page boundary is never served. So each next page asks for
``updated_at >= last timestamp seen`` (sent as ``+gt`` one second earlier,
since ThreatQ filters at second resolution) and drops the ids already yielded
at that timestamp. When a whole page shares one timestamp, keyset paging
cannot move forward, so we fall back to ``offset`` within that timestamp,
with overlapping pages (ids de-duplicated) so that an item leaving the
timestamp cannot push another past us.

Keyset paging is only safe when the server sorts as asked. Each page is held
back until the next answer confirms the order (the page is in order, and the
next ``total`` dropped by exactly the items below the new bound); a server
that ignores the sort makes the pull fall back to reading the whole window by
offset and sorting it here, with a warning, so nothing is skipped or repeated.

An item changed during the pull gets a newer ``updated_at``: it is yielded
later in this pull (when still before ``until``) or by the next pull that
starts at the same ``since``; unchanged items are always yielded.
"""

from __future__ import annotations

import copy
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterator, Mapping, Sequence

import attrs

import logging

from exportkit.errors import SourceError
from exportkit.records import parse_time
from exportkit.jsontext import JSONTooDeep, loads_json, nesting_depth

__all__ = [
    "Collection",
    "find_collection",
    "list_collections",
    "load_catalogues",
    "with_window",
    "iter_indicators",
    "format_tq_time",
    "DEFAULT_WITH",
]

#: the blocks a full pull asks for
DEFAULT_WITH = "attributes,sources,score,type,status,tags"
_SEARCH_PAGE = 200
_TS_FORMAT = "%Y-%m-%d %H:%M:%S"
log = logging.getLogger("exportkit.source.threatq")


@attrs.frozen
class Collection:
    """A Data Collection: its id, name, hash (if the server has one) and saved ``api_query``."""

    id: int | str
    name: str
    api_query: Mapping[str, Any]
    hash: str | None = None


def format_tq_time(value: datetime) -> str:
    """An aware datetime as ThreatQ's ``YYYY-MM-DD HH:MM:SS`` (UTC)."""
    return value.astimezone(timezone.utc).strftime(_TS_FORMAT)


def _data_list(body: Any) -> list[Any]:
    data = body.get("data") if isinstance(body, Mapping) else body
    if isinstance(data, list):
        return data
    if isinstance(data, Mapping):  # an empty page is sometimes {} instead of []
        return [] if not data else list(data.values()) if all(isinstance(v, Mapping) for v in data.values()) else [data]
    return []


def list_collections(client: Any) -> list[dict[str, Any]]:
    """Every saved search (``GET /api/search/query``), following ``limit``/``offset`` paging when the server pages."""
    out: list[dict[str, Any]] = []
    offset = 0
    while True:
        body = client.get("/api/search/query", params={"limit": _SEARCH_PAGE, "offset": offset})
        page = [item for item in _data_list(body) if isinstance(item, Mapping)]
        out.extend(dict(item) for item in page)
        total = body.get("total") if isinstance(body, Mapping) else None
        offset += len(page)
        # Servers that ignore limit answer everything at once; stop on a short page or at total.
        if not page or len(page) < _SEARCH_PAGE or (isinstance(total, int) and offset >= total):
            return out


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


def find_collection(client: Any, name: str) -> Collection:
    """The Data Collection named exactly ``name`` (case and spacing as in ThreatQ).

    :raises SourceError: none matches; the message lists the names that exist.
    """
    entries = list_collections(client)
    for entry in entries:
        if str(entry.get("name", "")) == name:
            return Collection(id=entry.get("id"), name=name, api_query=_api_query(entry), hash=entry.get("hash"))
    names = sorted(str(e.get("name")) for e in entries if e.get("name") is not None)
    close = [n for n in names if n.strip().casefold() == name.strip().casefold()]
    hint = f" (did you mean {close[0]!r}? names are matched exactly)" if close else ""
    listing = ", ".join(repr(n) for n in names) if names else "none"
    raise SourceError(f"ThreatQ has no Data Collection named {name!r}{hint}; existing collections: {listing}")


def load_catalogues(client: Any) -> tuple[dict[int, str], dict[int, str]]:
    """``(types, statuses)``: id -> name, from ``/api/indicator/types`` and ``/api/indicator/statuses``.

    Ids differ between ThreatQ installations, so they are never hard-coded.
    """

    def catalogue(path: str) -> dict[int, str]:
        out: dict[int, str] = {}
        for item in _data_list(client.get(path, params={"limit": 1000})):
            if isinstance(item, Mapping) and item.get("id") is not None and item.get("name"):
                try:
                    out[int(item["id"])] = str(item["name"])
                except (TypeError, ValueError):
                    continue
        if not out:
            raise SourceError(f"ThreatQ {path} returned no entries")
        return out

    return catalogue("/api/indicator/types"), catalogue("/api/indicator/statuses")


def with_window(api_query: Mapping[str, Any], *, gt: str | None = None, lt: str | None = None) -> dict[str, Any]:
    """A copy of ``api_query`` whose ``filters`` also require ``gt < updated_at < lt``.

    Like the SDK's ``inject_date``, the window goes into a ``+and`` list in
    ``filters``; the saved filters are kept as the first member, so the
    collection's own meaning is untouched. ``None`` leaves that side open.
    """
    query = copy.deepcopy(dict(api_query))
    bounds: dict[str, str] = {}
    if gt is not None:
        bounds["+gt"] = gt
    if lt is not None:
        bounds["+lt"] = lt
    if not bounds:
        return query
    filters = query.get("filters") or {}
    members: list[Any] = [filters] if filters else []
    members.append({"updated_at": bounds})
    query["filters"] = {"+and": members}
    query.setdefault("criteria", {})
    return query


def _ts(item: Mapping[str, Any]) -> datetime | None:
    try:
        return parse_time(item.get("updated_at"))
    except ValueError:
        return None


def iter_indicators(
    client: Any,
    api_query: Mapping[str, Any],
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    page_size: int = 500,
    with_: str | None = DEFAULT_WITH,
    fields: Sequence[str] | None = None,
    on_total: Callable[[int], None] | None = None,
) -> Iterator[dict[str, Any]]:
    """Yield the raw indicators of ``api_query`` with ``since <= updated_at < until``, by ``(updated_at, id)``.

    :param since: inclusive lower bound (``None``: from the start).
    :param until: exclusive upper bound (``None``: open; the engine passes the run start time).
    :param page_size: indicators per request.
    :param with_: the ``with=`` blocks; ``None`` sends none.
    :param fields: a ``fields`` list for the query body (``id`` and ``updated_at`` are added, paging needs them).
    :param on_total: called once with the server's ``total`` of the first page (for progress).

    Items without a readable ``updated_at`` or ``id`` are yielded as they come
    (the normaliser turns them into bad records); they cannot steer paging.
    """
    if page_size < 1:
        raise ValueError("page_size must be at least 1")
    if fields is not None:
        fields = list(dict.fromkeys([*fields, "id", "updated_at"]))
    # ThreatQ compares at second resolution: widen to whole seconds, then trim exactly here.
    lt = None
    if until is not None:
        ceil = until.replace(microsecond=0) + (timedelta(seconds=1) if until.microsecond else timedelta(0))
        lt = format_tq_time(ceil)
    lower: datetime | None = since.replace(microsecond=0) if since is not None else None
    seen_at_lower: set[str] = set()  # ids already yielded whose updated_at == lower
    offset = 0
    # Pages overlap in offset mode, so an item leaving the shared timestamp cannot make us skip one.
    overlap = page_size // 4 if page_size > 1 else 0
    told_total = False
    yielded: set[str] = set()  # ids yielded so far (the unsorted fallback must not repeat them)
    pending: list[dict[str, Any]] = []  # one page held back until the next answer confirms the order
    expected_total: int | None = None  # what the next keyset page's total must be if the server sorts
    while True:
        gt = format_tq_time(lower - timedelta(seconds=1)) if lower is not None else None
        body_query = with_window(api_query, gt=gt, lt=lt)
        if fields is not None:
            body_query["fields"] = fields
        # One sort field, the documented form; ties within a second are handled by ids seen.
        params: dict[str, Any] = {"limit": page_size, "offset": offset, "sort": "updated_at"}
        if with_:
            params["with"] = with_
        body = client.post("/api/indicators/query", params=params, json=body_query)
        page = [item for item in _data_list(body) if isinstance(item, Mapping)]
        if not told_total and on_total is not None and isinstance(body, Mapping):
            total = body.get("total")
            if isinstance(total, int):
                on_total(total)
        told_total = True
        keyed = [(item, _ts(item), str(item.get("id", ""))) for item in page]
        stamps_as_served = [ts for _, ts, _ in keyed if ts is not None]
        total = body.get("total") if isinstance(body, Mapping) else None
        # Two signs that the server ignored the sort: a page out of order, or a
        # keyset step that dropped more items than the page held below the new
        # bound (items we never saw). Either way keyset paging would skip items,
        # so read the whole window by offset instead and sort it here.
        unsorted = stamps_as_served != sorted(stamps_as_served)
        if expected_total is not None and isinstance(total, int) and total < expected_total:
            unsorted = True
        if unsorted:
            yield from _unsorted_window(client, api_query, since, until, lt, page_size, params, fields, skip=yielded)
            return
        # The previous page is released only now that this answer showed the server sorts.
        for item in pending:
            yielded.add(str(item.get("id", "")))
            yield item
        pending = []
        # Defensive: keep (updated_at, id) order even if a server sorts ids as strings.
        keyed.sort(key=lambda k: (k[1] or datetime.min.replace(tzinfo=timezone.utc), _id_key(k[2])))
        for item, ts, ident in keyed:
            if ts is not None and lower is not None and ts == lower and ident in seen_at_lower:
                continue
            if ts is not None and ((since is not None and ts < since) or (until is not None and ts >= until)):
                continue
            if ts is not None and ts == lower:
                seen_at_lower.add(ident)
            pending.append(dict(item))
        if len(page) < page_size:
            for item in pending:
                yield item
            return
        stamps = [ts for _, ts, _ in keyed if ts is not None]
        if not stamps:
            offset += page_size  # nothing to steer by: plain offset paging is all that is left
            continue
        last = max(stamps)
        if lower is not None and last == lower:
            offset += page_size - overlap
            expected_total = None
            continue
        # A sorted page at offset 0 held every item of the window below ``last``.
        below = sum(1 for _, ts, _ in keyed if ts is not None and ts < last)
        expected_total = total - below if offset == 0 and isinstance(total, int) else None
        lower, offset = last, 0
        seen_at_lower = {ident for _, ts, ident in keyed if ts == last}


def _unsorted_window(
    client: Any,
    api_query: Mapping[str, Any],
    since: datetime | None,
    until: datetime | None,
    lt: str | None,
    page_size: int,
    params: Mapping[str, Any],
    fields: Sequence[str] | None,
    *,
    skip: set[str],
) -> Iterator[dict[str, Any]]:
    """Fallback for servers that do not sort: offset-page the fixed window, keep each id's newest, sort, yield.

    Ids in ``skip`` were yielded already and are not yielded again.
    """
    log.warning("ThreatQ did not sort the query by updated_at; reading the whole window before sending")
    gt = format_tq_time(since.replace(microsecond=0) - timedelta(seconds=1)) if since is not None else None
    query = with_window(api_query, gt=gt, lt=lt)
    if fields is not None:
        query["fields"] = list(fields)
    newest: dict[str, tuple[datetime | None, dict[str, Any]]] = {}
    unkeyed: list[dict[str, Any]] = []
    offset = 0
    while True:
        body = client.post("/api/indicators/query", params={**params, "offset": offset}, json=query)
        page = [item for item in _data_list(body) if isinstance(item, Mapping)]
        for item in page:
            ident, ts = str(item.get("id", "")), _ts(item)
            if not ident or ts is None:
                unkeyed.append(dict(item))
                continue
            if ident in skip or (since is not None and ts < since) or (until is not None and ts >= until):
                continue
            if ident not in newest or (newest[ident][0] or ts) <= ts:
                newest[ident] = (ts, dict(item))
        if len(page) < page_size:
            break
        offset += len(page)
    yield from unkeyed
    for ident, (_ts_value, item) in sorted(newest.items(), key=lambda kv: (kv[1][0], _id_key(kv[0]))):
        yield item


def _id_key(ident: str) -> tuple[int, int, str]:
    return (0, int(ident), "") if ident.isdigit() else (1, 0, ident)
