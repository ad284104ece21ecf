"""Running a collection's query and paging through the result safely.

:func:`iter_indicators` runs a saved ``api_query`` through ``POST
/api/indicators/query`` with an added window on ``touched_at``, sorted by
``touched_at`` (ties in ``id`` order here). ``touched_at`` and not
``updated_at``: a change to an indicator's child rows (its sources and
their TLP, its attributes) moves only ``touched_at``, and such a change (a
source turning TLP red) must be exported. The extra reads are cheap: a
record whose content did not change is not sent again.

The query asks for the ``attributes``, ``sources`` and ``tags`` blocks
with a ``fields`` list in the body (:data:`DEFAULT_FIELDS`): ThreatQ no
longer serves attributes and sources by default, and ``with=`` is not what
public clients send on this endpoint (it stays available for a server that
needs it).

Paging: ThreatQ echoes ``limit`` and may cap it silently, so a page shorter
than asked does not end the result. Paging ends at an empty page, or when
the pages read reach the answer's ``total`` (without a ``total``: at a page
shorter than the echoed ``limit``).

Why keyset paging: plain ``offset`` paging over a set sorted by a time
loses items. When an indicator on an earlier page is changed while we page,
it moves to the end, every later item shifts left by one, and the item at
the page boundary is never served. So each next page asks for ``time >=
last timestamp seen`` (sent as ``+gt`` one second earlier, since ThreatQ
filters at second resolution) and drops the ids already yielded at that
timestamp. When a whole page shares one timestamp, keyset paging cannot
move forward, so we fall back to ``offset`` within that timestamp, with
overlapping pages (ids de-duplicated) so that an item leaving the timestamp
cannot push another past us.

Keyset paging is only safe when the server sorts as asked. Each page is held
back until the next answer confirms the order (the page is in order, and the
next ``total`` dropped by exactly the items below the new bound); a server
that ignores the sort makes the pull fall back to reading the whole window by
offset and sorting it here, with a warning, so nothing is skipped or repeated.

Pages in flight: over a WAN every page is a round trip, and the next keyset
page cannot be asked for before this one is read. So each request is sent
together with up to ``pages_in_flight - 1`` *continuations*: the same query
at the offsets that follow (``offset + k * (limit - 2)``). A continuation
counts only if its first two items are the last two of the page before it,
which proves that nothing before it left the window in between (items only
ever leave a fixed window while it is read: a change moves them past
``until``); the pages are then one longer page of the same query, and paging
goes on from its end exactly as from one page. A continuation that does not
line up, fails, or lies past the end is dropped, and paging goes on from
what did line up. The offsets stay below ``pages_in_flight * limit``.

An item changed during the pull gets a newer time: it is yielded later in
this pull (when still before ``until``) or by the next pull that starts at
the same ``since``; unchanged items are always yielded.
"""

from __future__ import annotations

import copy
import logging
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone, tzinfo
from collections.abc import Mapping, Sequence
from typing import Any, Callable, Iterator

from exportkit.errors import SourceError
from exportkit.threatq.times import format_tq_time, parse_tq_time

__all__ = ["iter_indicators", "with_window", "data_list", "DEFAULT_FIELDS", "TIME_FIELDS"]

#: the ``fields`` a full pull asks for: every column plus the blocks ThreatQ leaves out unless named
DEFAULT_FIELDS: tuple[str, ...] = ("*", "attributes", "sources", "tags")
#: the time fields a pull can window and sort on
TIME_FIELDS: tuple[str, ...] = ("touched_at", "updated_at")
#: pages in a row that may bring nothing new before paging is given up as stuck
_STALL_LIMIT = 3
#: items a continuation repeats from the page before it, to prove it follows on
_OVERLAP = 2
log = logging.getLogger("exportkit.source.threatq")


def data_list(body: Any) -> list[Any]:
    """The ``data`` of an answer as a list (an empty page is sometimes ``{}`` instead of ``[]``)."""
    data = body.get("data") if isinstance(body, Mapping) else body
    if isinstance(data, list):
        return data
    if isinstance(data, Mapping):
        return [] if not data else list(data.values()) if all(isinstance(v, Mapping) for v in data.values()) else [data]
    return []


def with_window(api_query: Mapping[str, Any], *, gt: str | None = None, lt: str | None = None,
                field: str = "touched_at") -> dict[str, Any]:
    """A copy of ``api_query`` whose ``filters`` also require ``gt < field < lt``.

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
    members.append({field: bounds})
    query["filters"] = {"+and": members}
    query.setdefault("criteria", {})
    return query


def _ident(item: Mapping[str, Any]) -> str:
    return str(item.get("id", ""))


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def last_page(page: Sequence[Any], body: Any, offset: int, asked: int) -> bool:
    """Whether ``page`` (read at ``offset``, ``asked`` items requested) is the last of its query.

    An empty page always is; otherwise ``total`` decides when the server sent
    one. Without it, a page shorter than the ``limit`` the server echoed (it
    may have capped what was asked) is the last.
    """
    if not page:
        return True
    total = _int(body.get("total")) if isinstance(body, Mapping) else None
    if total is not None:
        return offset + len(page) >= total
    echoed = _int(body.get("limit")) if isinstance(body, Mapping) else None
    limit = echoed if echoed is not None and 0 < echoed <= asked else asked
    return len(page) < limit


class _Pager:
    """What every page of one pull shares: the field, the zone, the request shape and the checks."""

    def __init__(self, client: Any, api_query: Mapping[str, Any], *, field: str, tz: tzinfo, page_size: int,
                 with_: str | None, fields: Sequence[str] | None, require: Sequence[str], pages_in_flight: int = 1) -> None:
        self.client, self.api_query, self.field, self.tz = client, api_query, field, tz
        self.page_size, self.with_, self.require = page_size, with_, tuple(require)
        self.pages_in_flight = max(1, pages_in_flight) if page_size > _OVERLAP else 1
        self.known_total: int | None = None  # the last answer's total: no continuation is asked past it
        self.served: int | None = None  # items in a full page as ThreatQ serves them (it may cap the limit)
        self._pool: ThreadPoolExecutor | None = None
        if fields is not None and "*" not in fields:
            fields = list(dict.fromkeys([*fields, "id", field]))
        self.fields = list(fields) if fields is not None else None

    def fetch(self, gt: datetime | None, lt: str | None, offset: int) -> tuple[Any, list[Mapping[str, Any]]]:
        """The page of the window ``gt - 1s < field < lt`` at ``offset``, lengthened by the continuations that line up.

        Returns ``(body, items)``: ``items`` are consecutive items of the query from
        ``offset`` on; ``body`` is the answer of the last page used (its ``total``
        is the most recent). See the module docstring.
        """
        served = self.served  # ThreatQ may serve fewer than asked: continuations follow what it serves
        step = (served or 0) - _OVERLAP
        ahead = [offset + k * step for k in range(1, self.pages_in_flight)] if step > 0 else []
        if self.known_total is not None:
            ahead = [at for at in ahead if at < self.known_total]
        if not ahead:
            body, page = self.fetch_one(gt, lt, offset)
            self._note(body, page, offset)
            return body, page
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self.pages_in_flight - 1, thread_name_prefix="exportkit-threatq-ahead")
        futures = [self._pool.submit(self.fetch_one, gt, lt, at, retry=False) for at in ahead]
        try:
            body, page = self.fetch_one(gt, lt, offset)
            items, at = list(page), offset
            for future in futures:
                if len(page) != served or last_page(page, body, at, self.page_size):
                    break
                try:
                    next_body, next_page = future.result()
                except Exception as exc:  # the next request of the loop asks again, and raises if it must
                    log.debug("a page asked ahead failed, paging goes on without it: %s", exc)
                    break
                tail = [_ident(i) for i in page[-_OVERLAP:]]
                if "" in tail or [_ident(i) for i in next_page[:_OVERLAP]] != tail:
                    break  # something before it left the window meanwhile (or no ids to tell): not a continuation
                items += next_page[_OVERLAP:]
                body, page, at = next_body, next_page, at + step
        finally:
            for future in futures:
                future.cancel()
        self._note(body, page, at)
        return body, items

    def _note(self, body: Any, page: Sequence[Any], offset: int) -> None:
        """Remember the last answer's total and, from a page that was not the last, how many a page holds."""
        self.known_total = _int(body.get("total")) if isinstance(body, Mapping) else None
        if page and not last_page(page, body, offset, self.page_size):
            self.served = len(page)

    def close(self) -> None:
        """End the threads of pages asked ahead (answers still coming are not waited for)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def fetch_one(self, gt: datetime | None, lt: str | None, offset: int, *, retry: bool = True) -> tuple[Any, list[Mapping[str, Any]]]:
        """One page of the window ``gt - 1s < field < lt`` at ``offset``; checks :attr:`require`.

        ``retry=False`` (a page asked ahead): one attempt, no backoff.
        """
        # One sort field, the documented form; ties within a second are handled by ids seen.
        params: dict[str, Any] = {"limit": self.page_size, "offset": offset, "sort": self.field}
        if self.with_:
            params["with"] = self.with_
        bound = format_tq_time(gt.replace(microsecond=0) - timedelta(seconds=1), self.tz) if gt is not None else None
        query = with_window(self.api_query, gt=bound, lt=lt, field=self.field)
        if self.fields is not None:
            query["fields"] = list(self.fields)
        body = self.client.post("/api/indicators/query", params=params, json=query, **({} if retry else {"retry": False}))
        page = [item for item in data_list(body) if isinstance(item, Mapping)]
        for key in self.require:
            if page and not any(key in item for item in page):
                asked = f"fields {', '.join(self.fields or ())}" + (f"; with={self.with_}" if self.with_ else "")
                raise SourceError(
                    f"ThreatQ served {len(page)} indicators without their {key!r} although the query asked for them "
                    f"({asked}). Without them the TLP of these indicators is unknown, so the run stops rather than "
                    "export them with a guessed TLP; if this ThreatQ needs with= to serve them, set [source] with_blocks"
                )
        return body, page

    def ts(self, item: Mapping[str, Any]) -> datetime | None:
        try:
            return parse_tq_time(item.get(self.field), self.tz)
        except (ValueError, TypeError):
            return None


def iter_indicators(
    client: Any,
    api_query: Mapping[str, Any],
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    page_size: int = 500,
    with_: str | None = None,
    fields: Sequence[str] | None = DEFAULT_FIELDS,
    require: Sequence[str] = (),
    time_field: str = "touched_at",
    tz: tzinfo = timezone.utc,
    on_total: Callable[[int], None] | None = None,
    pages_in_flight: int = 1,
) -> Iterator[dict[str, Any]]:
    """Yield the raw indicators of ``api_query`` with ``since <= time_field < until``, by ``(time_field, id)``.

    :param since: inclusive lower bound (``None``: from the start).
    :param until: exclusive upper bound (``None``: open; the engine passes ThreatQ's clock at the run start).
    :param page_size: indicators asked for per request (the server may serve fewer).
    :param with_: ``with=`` blocks, only for a server that needs them; ``None`` sends none.
    :param fields: the ``fields`` list for the query body (without ``*``, ``id`` and
        ``time_field`` are added: paging needs them); ``None`` sends none.
    :param require: keys that at least one item of every non-empty page must have;
        :class:`SourceError` when a page has none (the server left out what we asked for).
    :param time_field: ``touched_at`` (every change, child rows included) or ``updated_at``.
    :param tz: the appliance's time zone (ThreatQ's times carry none).
    :param on_total: called once with the server's ``total`` of the first page.
    :param pages_in_flight: requests sent at once, the page and its continuations (module docstring).
    :raises SourceError: a page lacks a required key, or the server keeps serving
        the same items (it ignores ``offset``), besides the client's own errors.

    Items without a readable time or ``id`` are yielded as they come
    (the normaliser turns them into bad records); they cannot steer paging.
    """
    if page_size < 1:
        raise ValueError("page_size must be at least 1")
    if time_field not in TIME_FIELDS:
        raise ValueError(f"time_field must be one of {', '.join(TIME_FIELDS)}")
    pager = _Pager(client, api_query, field=time_field, tz=tz, page_size=page_size, with_=with_, fields=fields, require=require,
                   pages_in_flight=pages_in_flight)
    # ThreatQ compares at second resolution: widen to whole seconds, then trim exactly here.
    lt = None
    if until is not None:
        ceil = until.replace(microsecond=0) + (timedelta(seconds=1) if until.microsecond else timedelta(0))
        lt = format_tq_time(ceil, tz)
    lower: datetime | None = since.replace(microsecond=0) if since is not None else None
    seen_at_lower: set[str] = set()  # ids already yielded whose time == lower
    offset = 0
    told_total = False
    stalled = 0  # pages in a row that brought nothing new
    yielded: set[str] = set()  # ids yielded so far (the unsorted fallback must not repeat them)
    pending: list[dict[str, Any]] = []  # one page held back until the next answer confirms the order
    expected_total: int | None = None  # what the next keyset page's total must be if the server sorts
    try:
        while True:
            body, page = pager.fetch(lower, lt, offset)
            total = _int(body.get("total")) if isinstance(body, Mapping) else None
            if not told_total and on_total is not None and total is not None:
                on_total(total)
            told_total = True
            keyed = [(item, pager.ts(item), _ident(item)) for item in page]
            stamps_as_served = [ts for _, ts, _ in keyed if ts is not None]
            # Two signs that the server ignored the sort: a page out of order, or a
            # keyset step that dropped more items than the page held below the new
            # bound (items we never saw). Either way keyset paging would skip items,
            # so read the whole window by offset instead and sort it here.
            unsorted = stamps_as_served != sorted(stamps_as_served)
            if expected_total is not None and total is not None and total < expected_total:
                unsorted = True
            if unsorted:
                yield from _unsorted_window(pager, since, until, lt, skip=yielded)
                return
            # The previous page is released only now that this answer showed the server sorts.
            for held in pending:
                yielded.add(_ident(held))
                yield held
            pending = []
            # Defensive: keep (time, id) order even if a server sorts ids as strings.
            keyed.sort(key=lambda k: (k[1] or datetime.min.replace(tzinfo=timezone.utc), _id_key(k[2])))
            fresh = 0
            for item, ts, ident in keyed:
                if ts is not None and lower is not None and ts == lower and ident in seen_at_lower:
                    continue
                fresh += 1
                if ts is not None and ((since is not None and ts < since) or (until is not None and ts >= until)):
                    continue
                if ts is not None and ts == lower:
                    seen_at_lower.add(ident)
                pending.append(dict(item))
            if last_page(page, body, offset, page_size):
                yield from pending
                return
            stalled = 0 if fresh else stalled + 1
            if stalled >= _STALL_LIMIT:
                raise SourceError("ThreatQ kept serving the same indicators for new offsets; paging cannot go on safely")
            stamps = [ts for _, ts, _ in keyed if ts is not None]
            if not stamps:
                offset += len(page)  # nothing to steer by: plain offset paging is all that is left
                continue
            last = max(stamps)
            if lower is not None and last == lower:
                # Pages overlap in offset mode, so an item leaving the shared timestamp cannot make us skip one.
                offset += len(page) - len(page) // 4
                expected_total = None
                continue
            # A sorted page at offset 0 held every item of the window below ``last``.
            below = sum(1 for _, ts, _ in keyed if ts is not None and ts < last)
            expected_total = total - below if offset == 0 and total is not None else None
            lower, offset = last, 0
            seen_at_lower = {ident for _, ts, ident in keyed if ts == last}
    finally:
        pager.close()


def _unsorted_window(
    pager: _Pager,
    since: datetime | None,
    until: datetime | None,
    lt: str | None,
    *,
    skip: set[str],
) -> Iterator[dict[str, Any]]:
    """Fallback for servers that do not sort: offset-page the fixed window, keep each id's newest, sort, yield.

    Ids in ``skip`` were yielded already and are not yielded again.
    """
    log.warning("ThreatQ did not sort the query by %s; reading the whole window before sending", pager.field)
    newest: dict[str, tuple[datetime | None, dict[str, Any]]] = {}
    unkeyed: list[dict[str, Any]] = []
    offset = 0
    lower = since.replace(microsecond=0) if since is not None else None
    while True:
        body, page = pager.fetch(lower, lt, offset)
        for item in page:
            ident, ts = _ident(item), pager.ts(item)
            if not ident or ts is None:
                unkeyed.append(dict(item))
                continue
            if ident in skip or (since is not None and ts < since) or (until is not None and ts >= until):
                continue
            if ident not in newest or (newest[ident][0] or ts) <= ts:
                newest[ident] = (ts, dict(item))
        if last_page(page, body, offset, pager.page_size):
            break
        offset += len(page)
    yield from unkeyed
    for ident, (_ts_value, item) in sorted(newest.items(), key=lambda kv: (kv[1][0], _id_key(kv[0]))):
        yield item


def _id_key(ident: str) -> tuple[int, int, str]:
    return (0, int(ident), "") if ident.isdigit() else (1, 0, ident)
