"""The emulator's indicator store: records, a sorted index, query answers, rendering.

Records are kept by id, plus one index of ``(time, id)`` per sortable time
field (``updated_at`` and ``touched_at``), kept sorted on every change
(bisect). A query's non-window part is evaluated once per data version and
cached as a list of index keys; the window on the sort field is then a
binary search into it, so keyset paging over 50,000 indicators costs a few
microseconds per page.

Times are kept in UTC; :class:`~.behaviour.Behaviour` decides how they are
served (the appliance's time zone), whether a change to sources or
attributes moves ``updated_at`` or only ``touched_at``, whether
``attributes``/``sources`` need ``fields``, and whether sources carry a TLP.

Rendering follows the reference: ``with=`` adds the ``type``, ``status``,
``score`` (object), ``attributes``, ``sources``, ``tags`` and ``adversaries``
blocks; ``fields`` mode serves only the named fields, with ``type`` and
``status`` as name strings, ``score`` as a number and ``tags`` as strings.
All methods are thread-safe (one lock).
"""

from __future__ import annotations

import bisect
import difflib
import hashlib
import threading
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Mapping, Sequence

from exportkit.threatq.emulator.behaviour import Behaviour
from exportkit.threatq.emulator.data import SOURCES, STATUSES, TAGS, TYPES, fmt
from exportkit.threatq.emulator.filters import FilterError, Window, compile_filter, split_window

__all__ = ["IndicatorStore", "FilterError", "BASE_FIELDS", "SORT_FIELDS", "CHILD_KEYS"]

#: fields served without any ``with=``
BASE_FIELDS = ("id", "value", "class", "hash", "type_id", "status_id", "score", "description", "created_at", "updated_at",
               "published_at", "touched_at", "expires_at", "expired_at", "expires_calculated_at")
#: time fields a query can be sorted and windowed by (each has an index)
SORT_FIELDS = ("updated_at", "touched_at")
#: changes to these are changes to child rows (sources, their TLP, attributes)
CHILD_KEYS = frozenset({"sources", "source_tlp", "attributes"})
_DATE_FIELDS = frozenset({"created_at", "updated_at", "published_at", "touched_at", "expires_at", "expired_at", "expires_calculated_at"})
_TLP_IDS = {"red": 1, "amber": 2, "green": 3, "white": 4}
#: Fields the control API (``POST /_control/indicators/{id}``) can change; ``type_name`` and
#: ``status_name`` pick from the catalogues, the rest are stored as given. The score
#: ThreatQ shows is computed from ``manual_score`` (when set) and ``generated_score``.
CHANGEABLE_FIELDS: tuple[str, ...] = (
    "value", "type_name", "status_name", "description", "manual_score", "generated_score", "plain_score",
    "expires_at", "created_at", "tags", "attributes", "sources", "source_tlp", "type_id", "status_id",
)


def unchangeable_message(key: str) -> str:
    """Why ``key`` cannot be changed, with the fields that can and the likeliest one meant."""
    close = [f for f in CHANGEABLE_FIELDS if key and (key in f or f in key)] or difflib.get_close_matches(key, CHANGEABLE_FIELDS, n=1)
    hint = f" (did you mean {' or '.join(repr(f) for f in close[:2])}?)" if close else ""
    return f"cannot change {key!r}{hint}; fields that can change: {', '.join(CHANGEABLE_FIELDS)}"


_SOURCES_BY_ID = {s[0]: s for s in SOURCES}
_INF = float("inf")
_TAG_IDS = {name: 501 + n for n, name in enumerate(TAGS)}


class IndicatorStore:
    """Indicators by id with a sorted ``(updated_at, id)`` index.

    :param records: indicators in the internal shape of :func:`exportkit.threatq.emulator.data.generate`.
    :param now: the clock (aware UTC); changes stamp ``updated_at`` with it.
    :param behaviour: the switchable behaviours (shared with the emulator, read on every call).
    """

    def __init__(self, records: Iterable[dict[str, Any]], *, now: Callable[[], datetime],
                 behaviour: Behaviour | None = None) -> None:
        self.now = now
        self.behaviour = behaviour or Behaviour()
        self.types = {t["id"]: t["name"] for t in TYPES}
        self.statuses = {s["id"]: s["name"] for s in STATUSES}
        self._types_by_name = {t["name"].casefold(): t for t in TYPES}
        self._statuses_by_name = {s["name"].casefold(): s for s in STATUSES}
        self._records: dict[int, dict[str, Any]] = {r["id"]: r for r in records}
        self._indexes: dict[str, list[tuple[str, int]]] = {
            field: sorted((r[field], r["id"]) for r in self._records.values()) for field in SORT_FIELDS
        }
        self._lock = threading.RLock()
        self._version = 0
        self._cache: dict[tuple[str, str, str, int], list[tuple[str, int]]] = {}
        self._next_id = max(self._records, default=999) + 1

    # -- queries -----------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._records)

    def matching_keys(self, expr: Mapping[str, Any], field: str = "updated_at") -> tuple[list[tuple[str, int]], Window]:
        """Keys of ``field``'s index matching ``expr`` apart from its window on ``field``, and that window."""
        tz = self.behaviour.tz
        residual, window, key = split_window(expr, self.now, field, tz)
        with self._lock:
            index = self._indexes[field]
            cache_key = (field, key, str(tz), self._version)
            cached = self._cache.get(cache_key)
            if cached is None:
                if not residual:
                    cached = list(index)
                else:
                    pred = compile_filter(residual, types=self.types, statuses=self.statuses, now=self.now, tz=tz)
                    records = self._records
                    cached = [k for k in index if pred(records[k[1]])]
                if len(self._cache) > 64:
                    self._cache.clear()
                self._cache[cache_key] = cached
        return cached, window

    @staticmethod
    def window_slice(keys: Sequence[tuple[str, int]], window: Window) -> tuple[int, int]:
        """``(start, stop)`` of the keys inside ``window`` (keys sorted by ``(time, id)``)."""
        start, stop = 0, len(keys)
        if window.lo is not None:
            start = bisect.bisect_left(keys, (window.lo, -1)) if window.lo_inclusive else bisect.bisect_right(keys, (window.lo, _INF))
        if window.hi is not None:
            stop = bisect.bisect_right(keys, (window.hi, _INF)) if window.hi_inclusive else bisect.bisect_left(keys, (window.hi, -1))
        return start, max(start, stop)

    def query(self, expr: Mapping[str, Any], *, sort: str, limit: int, offset: int) -> tuple[int, list[dict[str, Any]]]:
        """``(total, page of internal records)`` for ``expr`` sorted by ``sort`` (``-`` = descending).

        :raises FilterError: the expression or the sort field is not supported.
        """
        fields = [f.strip() for f in (sort or "id").split(",") if f.strip()]
        plain = [f.lstrip("+") for f in fields]
        by = plain[0].lstrip("-") if plain and plain[0].lstrip("-") in SORT_FIELDS else "updated_at"
        with self._lock:  # one snapshot: keys and records from the same version
            keys, window = self.matching_keys(expr, by)
            start, stop = self.window_slice(keys, window)
            if plain in ([by], [by, "id"]):
                lo, hi = start + offset, min(stop, start + offset + limit)
                page = [self._records[i] for _, i in keys[lo:hi]] if lo < hi else []
            elif plain in ([f"-{by}"], [f"-{by}", "-id"]):
                lo, hi = max(start, stop - offset - limit), stop - offset
                page = [self._records[i] for _, i in reversed(keys[lo:hi])] if lo < hi else []
            else:
                recs = [self._records[i] for _, i in keys[start:stop]]
                for field in reversed(fields):
                    name = field.lstrip("-+")
                    if name not in BASE_FIELDS:
                        raise FilterError(f"unsupported sort field {name!r}")
                    recs.sort(key=lambda r: _sort_key(r, name), reverse=field.startswith("-"))  # sorted here, at once
                page = recs[offset: offset + limit]
            return stop - start, [dict(r) for r in page]

    def after_cursor(self, expr: Mapping[str, Any], cursor: tuple[str, int] | None, limit: int) -> tuple[int, list[dict[str, Any]]]:
        """``(total, next page)`` of ``expr`` in index order after ``cursor`` (for the hash endpoint)."""
        with self._lock:
            keys, window = self.matching_keys(expr)
            start, stop = self.window_slice(keys, window)
            total = stop - start
            if cursor is not None:
                start = max(start, bisect.bisect_right(keys, cursor))
            return total, [dict(self._records[i]) for _, i in keys[start: min(stop, start + limit)]]

    def get(self, ident: int) -> dict[str, Any] | None:
        with self._lock:
            rec = self._records.get(ident)
            return dict(rec) if rec is not None else None

    def find(self, *, value: str | None = None, ident: int | None = None, type_id: int | None = None) -> list[dict[str, Any]]:
        with self._lock:
            out = [r for _, i in self._indexes["updated_at"] for r in (self._records[i],)
                   if (value is None or r["value"] == value) and (ident is None or r["id"] == ident)
                   and (type_id is None or r["type_id"] == type_id)]
            return [dict(r) for r in out]

    # -- changes -----------------------------------------------------------------------

    def _unindex(self, rec: Mapping[str, Any]) -> None:
        for field, index in self._indexes.items():
            old = (rec[field], rec["id"])
            pos = bisect.bisect_left(index, old)
            if pos < len(index) and index[pos] == old:
                del index[pos]

    def _stamp(self, rec: dict[str, Any], at: str | None, *, touch_only: bool = False) -> None:
        self._unindex(rec)
        stamp = at or fmt(self.now())
        if not touch_only:
            rec["updated_at"] = stamp
        rec["touched_at"] = max(rec.get("touched_at") or "", stamp)
        for field, index in self._indexes.items():
            bisect.insort(index, (rec[field], rec["id"]))
        self._version += 1

    def update(self, ident: int, changes: Mapping[str, Any], *, updated_at: str | None = None) -> dict[str, Any]:
        """Change an indicator (``value``, ``type_name``, ``status_name``, scores, description, tags,
        ``sources``, ``source_tlp`` = {source id: TLP name or None}, ``attributes``, ...).

        ``updated_at`` and ``touched_at`` move to now (or to ``updated_at`` when
        given); with :attr:`Behaviour.touch_only_children`, a change made only
        of :data:`CHILD_KEYS` moves ``touched_at`` alone, as ThreatQ does.

        :raises KeyError: no such indicator, or an unknown type or status name.
        :raises ValueError: a field not in :data:`CHANGEABLE_FIELDS` (the message lists them).
        """
        unknown = [key for key in changes if key not in CHANGEABLE_FIELDS]
        if unknown:  # refuse before changing anything: no half-applied change
            raise ValueError(unchangeable_message(unknown[0]))
        with self._lock:
            rec = self._records[ident]
            for key, value in changes.items():
                if key == "type_name":
                    row = self._types_by_name[str(value).casefold()]
                    rec["type_id"], rec["class"] = row["id"], row["class"]
                elif key == "status_name":
                    rec["status_id"] = self._statuses_by_name[str(value).casefold()]["id"]
                elif key == "source_tlp":
                    overrides = dict(rec.get("source_tlp") or {})
                    for source_id, tlp in dict(value).items():
                        if tlp is not None and str(tlp).lower() not in _TLP_IDS:
                            raise KeyError(f"unknown TLP {tlp!r}")
                        overrides[int(source_id)] = None if tlp is None else str(tlp).lower()
                    rec["source_tlp"] = overrides
                else:
                    rec[key] = value
                    if key == "value":
                        rec["hash"] = hashlib.md5(str(value).encode("utf-8")).hexdigest()
            child_only = bool(changes) and set(changes) <= CHILD_KEYS
            self._stamp(rec, updated_at, touch_only=child_only and self.behaviour.touch_only_children)
            return dict(rec)

    def add(self, value: str, type_name: str, status_name: str = "Active", **fields: Any) -> dict[str, Any]:
        """Add an indicator (stamped now unless ``updated_at`` is given); returns it."""
        with self._lock:
            row = self._types_by_name[type_name.casefold()]
            now = fmt(self.now())
            rec: dict[str, Any] = {
                "id": self._next_id, "value": value, "class": row["class"],
                "hash": hashlib.md5(value.encode("utf-8")).hexdigest(), "type_id": row["id"],
                "status_id": self._statuses_by_name[status_name.casefold()]["id"],
                "generated_score": 5.0, "manual_score": None, "plain_score": False, "description": None,
                "created_at": now, "updated_at": fields.get("updated_at") or now, "published_at": now,
                "touched_at": fields.get("updated_at") or now, "expires_at": None,
                "expired_at": None, "expires_calculated_at": now, "attributes": [], "sources": [], "tags": [],
            }
            self._next_id += 1
            at = fields.pop("updated_at", None)
            self._records[rec["id"]] = rec
            self.update(rec["id"], fields, updated_at=at or now)
            return dict(rec)

    def remove(self, ident: int) -> None:
        """Delete an indicator. :raises KeyError: no such indicator."""
        with self._lock:
            rec = self._records[ident]
            self._unindex(rec)
            del self._records[ident]
            self._version += 1

    # -- rendering ---------------------------------------------------------------------

    def render(self, rec: Mapping[str, Any], *, with_: set[str], fields: Sequence[str] | None = None) -> dict[str, Any]:
        """One indicator as ThreatQ serves it, shaped by ``with=`` or by ``fields``, times in the appliance's zone."""
        out = self._render(rec, with_=with_, fields=fields)
        tz = self.behaviour.tz
        if tz is timezone.utc:
            return out
        for name in _DATE_FIELDS & set(out):
            out[name] = _local(out[name], tz)
        for block in ("attributes", "sources"):
            for item in out.get(block) or ():
                for name in _DATE_FIELDS & set(item):
                    item[name] = _local(item[name], tz)
        return out

    def _render(self, rec: Mapping[str, Any], *, with_: set[str], fields: Sequence[str] | None) -> dict[str, Any]:
        effective = rec["manual_score"] if rec["manual_score"] is not None else rec["generated_score"]
        type_name = self.types.get(rec["type_id"], "")
        status_name = self.statuses.get(rec["status_id"], "")
        if fields is not None:
            out: dict[str, Any] = {}
            wanted = list(BASE_FIELDS) if "*" in fields else list(fields)
            for name in wanted:
                if name == "type":
                    out["type"] = type_name
                elif name == "status":
                    out["status"] = status_name
                elif name == "score":
                    out["score"] = effective
                elif name == "tags":
                    out["tags"] = list(rec["tags"])
                elif name in ("attributes", "sources"):
                    out[name] = self._block(rec, name)
                elif name in rec and name not in ("generated_score", "manual_score", "plain_score"):
                    out[name] = rec[name]
            if "*" in fields:
                out["score"] = effective
                for extra in ("attributes", "sources"):
                    if extra in fields:
                        out[extra] = self._block(rec, extra)
                if "tags" in fields:
                    out["tags"] = list(rec["tags"])
            return out
        out = {name: rec.get(name) for name in BASE_FIELDS}
        out["score"] = effective
        if "type" in with_:
            out["type"] = {"id": rec["type_id"], "name": type_name, "class": rec["class"]}
        if "status" in with_:
            desc = next((s["description"] for s in STATUSES if s["id"] == rec["status_id"]), "")
            out["status"] = {"id": rec["status_id"], "name": status_name, "description": desc}
        if "score" in with_ and not rec.get("plain_score"):
            out["score"] = {"indicator_id": rec["id"], "generated_score": rec["generated_score"],
                            "manual_score": rec["manual_score"], "created_at": rec["created_at"], "updated_at": rec["updated_at"]}
        for block in ("attributes", "sources", "tags", "adversaries"):
            if block in with_ and not (self.behaviour.fields_required and block in ("attributes", "sources")):
                out[block] = self._block(rec, block)
        return out

    def _block(self, rec: Mapping[str, Any], block: str) -> list[dict[str, Any]]:
        ident = rec["id"]
        if block == "attributes":
            return [{"id": ident * 10 + n, "attribute_id": 300 + n, "indicator_id": ident, "name": name, "value": value,
                     "created_at": rec["created_at"], "updated_at": rec["updated_at"], "touched_at": rec["touched_at"]}
                    for n, (name, value) in enumerate(rec["attributes"])]
        if block == "sources":
            out = []
            overrides = rec.get("source_tlp") or {}
            for n, source_id in enumerate(rec["sources"]):
                sid, name, kind, tlp_id, tlp_name = _SOURCES_BY_ID[source_id]
                if source_id in overrides:  # this indicator's link to the source has its own TLP
                    tlp = overrides[source_id]
                    tlp_id, tlp_name = (None, None) if tlp is None else (_TLP_IDS[tlp], tlp.upper())
                if self.behaviour.sources_without_tlp:
                    tlp_id = tlp_name = None
                item: dict[str, Any] = {
                    "id": ident * 10 + n, "source_id": sid, "indicator_id": ident, "name": name, "source_type": kind,
                    "creator_source_id": sid, "reference_id": None, "indicator_status_id": rec["status_id"],
                    "indicator_type_id": rec["type_id"], "published_at": rec["published_at"],
                    "created_at": rec["created_at"], "updated_at": rec["updated_at"],
                }
                if tlp_id is not None:
                    item["tlp_id"] = tlp_id
                if tlp_name is not None:
                    item["tlp_name"] = tlp_name
                out.append(item)
            return out
        if block == "tags":
            return [{"id": _TAG_IDS.get(t, 599), "name": t} for t in rec["tags"]]
        return []


def _local(value: Any, tz: Any) -> Any:
    """An internal UTC ``YYYY-MM-DD HH:MM:SS`` as the same format in ``tz``."""
    if not isinstance(value, str) or not value:
        return value
    moment = datetime.strptime(value, "%Y-%m-%d %H:%M:%S").replace(tzinfo=timezone.utc)
    return moment.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S")


def _sort_key(rec: Mapping[str, Any], name: str) -> Any:
    if name == "score":
        return rec["manual_score"] if rec["manual_score"] is not None else rec["generated_score"]
    value = rec.get(name)
    return (value is None, value if value is not None else "")


def utcnow() -> datetime:
    """The emulator's default clock."""
    return datetime.now(timezone.utc)
