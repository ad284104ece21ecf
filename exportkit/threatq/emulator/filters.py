"""The subset of ThreatQ's Threat Library filter grammar the emulator understands.

An expression is a JSON object whose keys are ANDed. ``+and`` and ``+or``
take lists of expressions (nestable). Leaf keys: ``type_name``,
``status_name``, ``value``, ``score``, ``id``, ``type_id``, ``status_id``,
``class``, ``updated_at``, ``created_at``, ``touched_at``, ``published_at``,
``expires_at``. A leaf value is a scalar (equality), a list (any of), or an
object of operators: ``is``/``+is``/``+eq``, ``+ne``, ``+in``, ``+like``,
``+gt``, ``+gte``, ``+lt``, ``+lte``. Dates accept ``"NOW"`` and any
ISO-like timestamp. Anything else raises :class:`FilterError` (the emulator
answers 400), so a client bug is loud, not silently ignored.

:func:`split_window` pulls the bounds on one date field (``updated_at`` or
``touched_at``, the field the query is sorted by) out of the top-level
conjunction, so the store can answer windowed queries from its sorted index
with a binary search instead of scanning everything.

Dates in filters are wall-clock times of the appliance's time zone (``tz``,
UTC unless the emulator plays a non-UTC appliance); internally every time is
UTC, so each filter date is converted once here.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone, tzinfo
from collections.abc import Mapping
from typing import Any, Callable

from exportkit.records import parse_time

__all__ = ["FilterError", "compile_filter", "split_window", "split_updated_window", "Window", "date_value"]

Predicate = Callable[[Mapping[str, Any]], bool]
_DATE_KEYS = {"updated_at", "created_at", "touched_at", "published_at", "expires_at"}
_ORDER_OPS = {"+gt", "+gte", "+lt", "+lte"}


class FilterError(ValueError):
    """An expression outside the supported grammar (the message says where)."""


def date_value(value: Any, now: Callable[[], datetime], tz: tzinfo = timezone.utc) -> str:
    """A filter date as internal UTC ``YYYY-MM-DD HH:MM:SS``; ``"NOW"`` is the current time.

    A date without a zone is a wall-clock time in ``tz`` (the appliance's zone).
    """
    if isinstance(value, str) and value.strip().upper() == "NOW":
        return now().astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    try:
        if isinstance(value, str) and tz is not timezone.utc:
            naive = datetime.fromisoformat(value.strip())
            parsed = parse_time(naive.replace(tzinfo=tz) if naive.tzinfo is None else naive)
        else:
            parsed = parse_time(value)
    except (ValueError, TypeError):
        parsed = None
    if parsed is None:
        raise FilterError(f"not a date: {value!r}")
    return parsed.strftime("%Y-%m-%d %H:%M:%S")


class Window:
    """Bounds on the sort field (``updated_at`` or ``touched_at``): ``lo``/``hi`` strings with inclusivity; ``None`` is open."""

    def __init__(self) -> None:
        self.lo: str | None = None
        self.lo_inclusive = True
        self.hi: str | None = None
        self.hi_inclusive = False

    def add(self, op: str, value: str) -> None:
        if op in ("+gt", "+gte"):
            inclusive = op == "+gte"
            if self.lo is None or value > self.lo or (value == self.lo and not inclusive):
                self.lo, self.lo_inclusive = value, inclusive
        else:
            inclusive = op == "+lte"
            if self.hi is None or value < self.hi or (value == self.hi and not inclusive):
                self.hi, self.hi_inclusive = value, inclusive


def split_updated_window(expr: Any, now: Callable[[], datetime]) -> tuple[dict[str, Any], Window, str]:
    """:func:`split_window` on ``updated_at``."""
    return split_window(expr, now)


def split_window(expr: Any, now: Callable[[], datetime], field: str = "updated_at",
                 tz: tzinfo = timezone.utc) -> tuple[dict[str, Any], Window, str]:
    """Split a top-level conjunction into ``(residual, window on field, cache key of residual)``."""
    residual: list[Any] = []
    window = Window()

    def walk(node: Any) -> None:
        if not isinstance(node, Mapping):
            raise FilterError(f"an expression must be an object, got {node!r}")
        for key, value in node.items():
            if key == "+and":
                if not isinstance(value, list):
                    raise FilterError("+and takes a list")
                for member in value:
                    walk(member)
            elif key == field and isinstance(value, Mapping) and value and set(value) <= _ORDER_OPS:
                for op, bound in value.items():
                    window.add(op, date_value(bound, now, tz))
            else:
                residual.append({key: value})

    walk(expr)
    rest = {"+and": residual} if residual else {}
    return rest, window, json.dumps(rest, sort_keys=True, default=str)


def compile_filter(expr: Any, *, types: Mapping[int, str], statuses: Mapping[int, str], now: Callable[[], datetime],
                   tz: tzinfo = timezone.utc) -> Predicate:
    """Compile an expression to a predicate over the emulator's internal indicator dicts (filter dates in ``tz``)."""
    if not isinstance(expr, Mapping):
        raise FilterError(f"an expression must be an object, got {expr!r}")
    parts: list[Predicate] = []
    for key, value in expr.items():
        if key in ("+and", "+or"):
            if not isinstance(value, list):
                raise FilterError(f"{key} takes a list")
            members = [compile_filter(m, types=types, statuses=statuses, now=now, tz=tz) for m in value]
            parts.append(_all_of(members) if key == "+and" else _any_of(members))
        else:
            parts.append(_leaf(key, value, types=types, statuses=statuses, now=now, tz=tz))
    if len(parts) == 1:
        return parts[0]
    return lambda rec: all(p(rec) for p in parts)


def _all_of(members: list[Predicate]) -> Predicate:
    return lambda rec: all(m(rec) for m in members)


def _any_of(members: list[Predicate]) -> Predicate:
    return lambda rec: any(m(rec) for m in members) if members else True


def _getter(key: str, types: Mapping[int, str], statuses: Mapping[int, str]) -> tuple[Callable[[Mapping[str, Any]], Any], str]:
    """(field getter, kind) where kind is ``name`` (case-insensitive), ``str``, ``num`` or ``date``."""
    if key == "type_name":
        folded = {k: v.casefold() for k, v in types.items()}
        return (lambda rec: folded.get(rec["type_id"], "")), "name"
    if key == "status_name":
        folded_s = {k: v.casefold() for k, v in statuses.items()}
        return (lambda rec: folded_s.get(rec["status_id"], "")), "name"
    if key == "value":
        return (lambda rec: rec["value"]), "str"
    if key == "class":
        return (lambda rec: rec["class"]), "name"
    if key == "score":
        return (lambda rec: rec["manual_score"] if rec["manual_score"] is not None else rec["generated_score"]), "num"
    if key in ("id", "type_id", "status_id"):
        return (lambda rec: rec[key]), "num"
    if key in _DATE_KEYS:
        return (lambda rec: rec.get(key)), "date"
    raise FilterError(f"unsupported filter key {key!r}")


def _leaf(key: str, spec: Any, *, types: Mapping[int, str], statuses: Mapping[int, str], now: Callable[[], datetime],
          tz: tzinfo = timezone.utc) -> Predicate:
    get, kind = _getter(key, types, statuses)

    def norm(value: Any) -> Any:
        if kind == "name":
            return str(value).casefold()
        if kind == "str":
            return str(value)
        if kind == "num":
            try:
                return float(value)
            except (TypeError, ValueError):
                raise FilterError(f"{key}: not a number: {value!r}") from None
        return date_value(value, now, tz)

    def norm_field(value: Any) -> Any:
        # Names are already folded by the getter; numbers compare as floats.
        return float(value) if kind == "num" else value

    if isinstance(spec, list):
        allowed = {norm(v) for v in spec}
        return lambda rec: get(rec) is not None and norm_field(get(rec)) in allowed
    if not isinstance(spec, Mapping):
        wanted = norm(spec)
        return lambda rec: get(rec) is not None and norm_field(get(rec)) == wanted

    def test(relation: Callable[[Any, Any], bool], bound: Any, *, when_absent: bool = False) -> Predicate:
        """``relation(field value, bound)`` per record; ``bound`` is fixed now, not when called."""
        return lambda rec: when_absent if get(rec) is None else relation(get(rec), bound)

    def ordered(compare: Callable[[Any, Any], bool]) -> Callable[[Any, Any], bool]:
        return lambda v, t: compare(norm_field(v), t)

    checks: list[Predicate] = []
    for op, operand in spec.items():
        if op in ("is", "+is", "+eq"):
            checks.append(test(lambda v, t: bool(norm_field(v) == t), norm(operand)))
        elif op == "+ne":
            checks.append(test(lambda v, t: bool(norm_field(v) != t), norm(operand), when_absent=True))
        elif op == "+in":
            if not isinstance(operand, list):
                raise FilterError(f"{key}: +in takes a list")
            checks.append(test(lambda v, t: norm_field(v) in t, {norm(v) for v in operand}))
        elif op == "+like":
            checks.append(test(lambda v, t: t in str(v).casefold(), str(operand).casefold()))
        elif op in _ORDER_OPS:
            cmp: Callable[[Any, Any], bool] = {
                "+gt": lambda a, b: a > b, "+gte": lambda a, b: a >= b, "+lt": lambda a, b: a < b, "+lte": lambda a, b: a <= b
            }[op]
            checks.append(test(ordered(cmp), norm(operand)))
        else:
            raise FilterError(f"{key}: unsupported operator {op!r}")
    return lambda rec: all(c(rec) for c in checks)

