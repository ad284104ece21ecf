"""Reading JSON from outside without letting its shape exhaust the stack.

Python's JSON parser recurses once per nesting level, so a text nested
100,000 deep (a hostile page, a saved query) raises ``RecursionError``.
:func:`loads_json` turns that into :class:`JSONTooDeep`, a ``ValueError``
like any other unreadable JSON, and :func:`nesting_depth` measures parsed
data without recursion, for code that walks it recursively afterwards.

:func:`compact_json` is the other direction: the compact text that content
hashes and external ids are taken of, fast, and byte for byte what the
standard library writes.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
import requests

__all__ = ["JSONTooDeep", "loads_json", "nesting_depth", "compact_json"]


class JSONTooDeep(requests.exceptions.JSONDecodeError):
    """A JSON text nested too deeply to parse safely (a ``ValueError``)."""


def loads_json(text: str | bytes) -> Any:
    """``json.loads`` that refuses nesting too deep for the parser with :class:`JSONTooDeep` (a ``ValueError``)."""
    try:
        return json.loads(text)
    except RecursionError:
        raise JSONTooDeep("JSON nested too deeply to read", "", 0) from None


def nesting_depth(value: Any, limit: int) -> int:
    """How deeply lists and dicts nest in ``value``, counted without recursion; stops counting past ``limit``."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (list, tuple, dict)):
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > limit:
                    return deepest
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth) for child in children)
    return deepest


def compact_json(value: Any) -> bytes:
    """``json.dumps(value, separators=(",", ":"), ensure_ascii=False)`` as UTF-8, the text hashes are taken of.

    orjson writes exactly those bytes for strings, integers, booleans, ``None``
    and lists and dicts of them, about three times faster; what it refuses
    (lone surrogates, integers past 64 bits, other types) takes the standard
    way, which raises or not as it always did. Floats it may spell
    differently (``1e16`` for ``1e+16``): a caller whose value holds floats
    checks them first.
    """
    try:
        return orjson.dumps(value)
    except TypeError:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
