"""Validation of CTIA create bodies: the JSON Schema plus CTIA's cross-field rules.

The schema file (``schema/ctia-new-entities.schema.json``) is a hand-written
restatement of CTIM's definitions for this project. It covers what CTIA
checks on the whole request (closed maps, required keys, types, enums) and
most per-entity checks (lengths, reference patterns). The rules it cannot
express are checked here in code, as CTIA does per entity:

* ``disposition`` and ``disposition_name`` agree;
* every time lies in [1970-01-01T00:00:00Z, 2525-01-01T00:01:00Z);
* ``valid_time``/``lifetime`` start <= end.

Both the sink (before sending, and in dry runs) and the emulator (on every
create) use these functions, so a body the sink would send is exactly a body
the emulator accepts.

Two validators read the same schema file: ``jsonschema-rs`` decides whether a
body is valid (a few microseconds per judgement; the sink validates every
body it sends), and the pure-Python ``jsonschema`` explains an invalid one
(its messages name the offending value the way the tests and the dead-letter
reasons expect). Only invalid bodies pay for the explanation.
"""

from __future__ import annotations

import functools
import json
import re
from datetime import datetime, timedelta, timezone
from importlib import resources
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import jsonschema_rs

if TYPE_CHECKING:
    from jsonschema import Draft202012Validator

__all__ = [
    "DISPOSITION_NUMBERS",
    "TIME_MIN",
    "TIME_MAX",
    "load_schema",
    "schema_errors",
    "rule_errors",
    "entity_errors",
    "parse_ctim_time",
]

#: CTIM's disposition number for each name
DISPOSITION_NUMBERS: Mapping[str, int] = {"Clean": 1, "Malicious": 2, "Suspicious": 3, "Common": 4, "Unknown": 5}
TIME_MIN = datetime(1970, 1, 1, tzinfo=timezone.utc)
#: times must lie strictly before this (CTIM's relevant-time range)
TIME_MAX = datetime(2525, 1, 1, 0, 1, tzinfo=timezone.utc)

_TIME = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d+))?)?(Z|[+-]\d{2}(?::?\d{2})?)$"
)
_KINDS = ("NewJudgement", "NewIndicator", "NewRelationship", "NewFeed", "NewBundle", "NewBulk")


@functools.lru_cache(maxsize=1)
def load_schema() -> dict[str, Any]:
    """The schema document (read once from the package data)."""
    text = resources.files("exportkit_ctia").joinpath("schema/ctia-new-entities.schema.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def _inline(node: Any, defs: Mapping[str, Any], expanding: tuple[str, ...] = ()) -> Any:
    """``node`` with each ``{"$ref": "#/$defs/X"}`` replaced by X itself (a cycle keeps its ``$ref``).

    Resolving references costs jsonschema more than checking the values:
    validating a judgement against the inlined schema takes less than half
    the time, and the sink validates every body before sending it.
    """
    if isinstance(node, dict):
        ref = node.get("$ref")
        if len(node) == 1 and isinstance(ref, str) and ref.startswith("#/$defs/"):
            name = ref.rsplit("/", 1)[1]
            if name in defs and name not in expanding:
                return _inline(defs[name], defs, (*expanding, name))
            return node
        return {key: _inline(value, defs, expanding) for key, value in node.items()}
    if isinstance(node, list):
        return [_inline(item, defs, expanding) for item in node]
    return node


@functools.lru_cache(maxsize=None)
def _validator(kind: str) -> Draft202012Validator:
    # Imported here: only invalid bodies need it, and it takes a noticeable part of start-up.
    from jsonschema import Draft202012Validator

    if kind not in _KINDS:
        raise ValueError(f"unknown body kind {kind!r}")
    schema = load_schema()
    root = _inline(schema["$defs"][kind], schema["$defs"], (kind,))
    # $defs stay for any reference a cycle left in place.
    return Draft202012Validator({"$schema": schema["$schema"], "$defs": schema["$defs"], **root})


@functools.lru_cache(maxsize=None)
def _fast_validator(kind: str) -> Any:
    if kind not in _KINDS:
        raise ValueError(f"unknown body kind {kind!r}")
    schema = load_schema()
    # The same document, entered at the kind's definition; formats are annotations
    # in draft 2020-12, as for the pure-Python validator.
    root = {"$schema": schema["$schema"], "$defs": schema["$defs"], "$ref": f"#/$defs/{kind}"}
    return jsonschema_rs.Draft202012Validator(root, validate_formats=False)


def schema_errors(kind: str, body: Any) -> list[str]:
    """Schema violations of ``body`` taken as ``kind`` (``NewJudgement``, ``NewBundle``, ...), as short texts."""
    if _fast_validator(kind).is_valid(body):
        return []
    errors = _explain(kind, body)
    if not errors:  # the two validators disagree: trust the stricter one, in its own words
        errors = [f"{'/'.join(str(p) for p in e.instance_path) or '(body)'}: {e.message[:200]}"
                  for e in _fast_validator(kind).iter_errors(body)]
    return errors


def _explain(kind: str, body: Any) -> list[str]:
    errors = []
    for error in _validator(kind).iter_errors(body):
        where = "/".join(str(p) for p in error.absolute_path) or "(body)"
        message = error.message
        if len(message) > 200:
            # Long values would drown the point: name the failed keyword instead.
            shown = repr(error.instance)
            shown = shown if len(shown) <= 60 else shown[:57] + "..."
            limit = error.validator_value if isinstance(error.validator_value, (int, float, str)) else None
            message = f"{shown} fails {error.validator}" + (f" {limit}" if limit is not None else "")
        errors.append(f"{where}: {message}")
    return errors


def parse_ctim_time(text: str) -> datetime | None:
    """Parse a CTIM time string to aware UTC; ``None`` when it is not one."""
    if not isinstance(text, str):
        return None
    # A run stamps every judgement with the same few times (its export time, the default
    # end), so those are parsed once; a long text is no time, and is not kept.
    return _parse_short_ctim_text(text) if len(text) <= 40 else _parse_ctim_text(text)


def _parse_ctim_text(text: str) -> datetime | None:
    match = _TIME.match(text)
    if not match:
        return None
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    try:
        value = datetime(
            int(year), int(month), int(day), int(hour), int(minute), int(second or 0),
            int((fraction or "0")[:6].ljust(6, "0")), tzinfo=timezone.utc,
        )
    except ValueError:
        return None
    if zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        digits = zone[1:].replace(":", "")
        offset = timedelta(hours=int(digits[:2]), minutes=int(digits[2:4] or 0))
        value -= sign * offset
    return value


_parse_short_ctim_text = functools.lru_cache(maxsize=1024)(_parse_ctim_text)


def _time_errors(where: str, text: Any) -> list[str]:
    value = parse_ctim_time(text)
    if value is None:
        return [f"{where}: {text!r} is not an ISO 8601 time"]
    if not TIME_MIN <= value < TIME_MAX:
        return [f"{where}: {text} is outside 1970-01-01T00:00:00Z..2525-01-01T00:01:00Z"]
    return []


def _range_errors(where: str, span: Any) -> list[str]:
    if not isinstance(span, Mapping):
        return []
    errors = []
    for key in ("start_time", "end_time"):
        if key in span:
            errors += _time_errors(f"{where}/{key}", span[key])
    if not errors and "start_time" in span and "end_time" in span:
        if parse_ctim_time(span["start_time"]) > parse_ctim_time(span["end_time"]):  # type: ignore[operator]
            errors.append(f"{where}: start_time {span['start_time']} is after end_time {span['end_time']}")
    return errors


def rule_errors(entity: Mapping[str, Any]) -> list[str]:
    """CTIA's per-entity rules the schema cannot express (see the module docstring)."""
    errors: list[str] = []
    number, name = entity.get("disposition"), entity.get("disposition_name")
    if number is not None and name is not None and DISPOSITION_NUMBERS.get(name) != number:
        errors.append("Mismatched disposition and dispositon_name for judgement")  # CTIA's own words
    for key in ("timestamp", "created", "modified"):
        if key in entity:
            errors += _time_errors(key, entity[key])
    errors += _range_errors("valid_time", entity.get("valid_time"))
    errors += _range_errors("lifetime", entity.get("lifetime"))
    return errors


def entity_errors(kind: str, entity: Any) -> list[str]:
    """Everything CTIA would refuse in one entity body: schema first, then the rules."""
    errors = schema_errors(kind, entity)
    if not errors and isinstance(entity, Mapping):
        errors = rule_errors(entity)
    return errors
