"""Stored JSON: orjson's speed, the standard library's answers."""

from __future__ import annotations

import datetime
import json
import uuid

import pytest

from exportkit import storedjson


@pytest.mark.parametrize("value", [
    {"judgement_id": "https://ctia/judgement/1", "generation": 3, "until": None},
    {1: "int keys become strings, as json.dumps makes them"},
    [2**70, -(2**70)],
    {"tuple": (1, 2), "nested": [{"a": [True, False, None]}], "text": "é \u2028 \x00 \ud83d\ude00"},
    "\ud800",
    1e16,
])
def test_every_value_reads_back_as_the_standard_library_reads_its_own_text(value):
    assert storedjson.loads(storedjson.dumps(value)) == json.loads(json.dumps(value))


@pytest.mark.parametrize("value", [datetime.datetime(2024, 1, 1), {1, 2}, {"at": datetime.date(2024, 1, 1)}, object()])
def test_what_json_refuses_is_refused(value):
    with pytest.raises(TypeError):
        storedjson.dumps(value)


def test_a_str_subclass_is_written_as_its_text():
    class Tag(str):
        pass

    assert storedjson.loads(storedjson.dumps({"tag": Tag("x")})) == {"tag": "x"}


def test_text_an_older_release_wrote_still_reads():
    assert storedjson.loads('{"a": 1, "b": [NaN]}')["a"] == 1
    assert storedjson.loads('"\\ud800"') == "\ud800"
    with pytest.raises(ValueError):
        storedjson.loads("{not json")


def test_a_float_that_is_not_finite_is_stored_as_null():
    assert storedjson.loads(storedjson.dumps({"x": float("nan"), "y": float("inf")})) == {"x": None, "y": None}


def test_a_uuid_is_stored_as_its_text():
    assert storedjson.loads(storedjson.dumps({"id": uuid.UUID(int=1)})) == {"id": str(uuid.UUID(int=1))}
