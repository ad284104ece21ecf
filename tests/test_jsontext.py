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
