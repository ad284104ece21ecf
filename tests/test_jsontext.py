"""Reading JSON from outside: nesting too deep is a ValueError, and depth is measured without recursion."""

from __future__ import annotations

import pytest

from exportkit.jsontext import JSONTooDeep, loads_json, nesting_depth

from .e2e.hostile import deep_json


def test_nesting_depth_counts_without_recursion():
    deep: list = []
    node = deep
    for _ in range(50_000):
        node.append([])
        node = node[0]
    assert nesting_depth(deep, 100) == 101
    assert nesting_depth({"a": [1, {"b": 2}]}, 100) == 3


def test_loads_json_refuses_deep_nesting_as_a_value_error():
    with pytest.raises(JSONTooDeep):
        loads_json(deep_json())
    assert issubclass(JSONTooDeep, ValueError)


def test_compact_json_is_byte_for_byte_what_the_standard_library_writes():
    import json
    import random

    from exportkit.jsontext import compact_json

    rnd = random.Random(3)
    alphabet = [chr(i) for i in range(0x80)] + ["\u2028", "é", "\U0001F600", "\ufeff", "\x85"]
    for _ in range(2000):
        text = "".join(rnd.choice(alphabet) for _ in range(rnd.randint(0, 12)))
        value = [text, {"k": text, "n": rnd.randint(-10**6, 10**6)}, True, None, rnd.randint(0, 2**62)]
        assert compact_json(value) == json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    assert compact_json([2**70]) == b"[1180591620717411303424]"  # past orjson's integers: the standard way
    with pytest.raises(UnicodeEncodeError):
        compact_json(["\ud800"])  # not Unicode: no text to hash, as before
