"""The JSON text of what exportkit stores: sink-store values, holdings' ``remote``, intents.

Every batch writes and reads thousands of these, so they go through orjson
(about 10x faster to write than the standard library) with the standard
library as the exact fallback for what orjson does not take: keys that are
not strings, integers past 64 bits, ``str`` subclasses and the like are
written by :func:`json.dumps` exactly as before, and text orjson refuses to
read (``NaN`` written by an older release, lone surrogate escapes) is read by
:func:`json.loads`.

Values of types JSON does not have (datetimes, sets, dataclasses) are
refused with :class:`TypeError`, as :func:`json.dumps` refuses them. Where
it differs from the standard library: a float that is not finite is written
as ``null`` (JSON has no NaN; PostgreSQL's ``jsonb`` refuses it too), and a
UUID or an enum member as its value.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

__all__ = ["dumps", "loads"]

#: orjson would write these natively; hand them to ``default`` instead, which sends them to json.dumps
_PLAIN_ONLY = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_SUBCLASS


def _not_plain(value: Any) -> Any:
    raise TypeError(f"{type(value).__name__} is not plain JSON")


def dumps(value: Any) -> str:
    """``value`` as JSON text.

    :raises TypeError: ``value`` holds something JSON cannot (as :func:`json.dumps` raises it).
    """
    try:
        return orjson.dumps(value, default=_not_plain, option=_PLAIN_ONLY).decode("utf-8")
    except TypeError:  # the standard library writes it, or raises its own error for it
        return json.dumps(value)


def loads(text: str | bytes) -> Any:
    """The value of a JSON text written by :func:`dumps` (or by any earlier release).

    :raises ValueError: the text is not JSON.
    """
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)
