"""The shipped schema and the cross-field rules the schema cannot express."""

from __future__ import annotations

import pytest

from exportkit_ctia.schema import entity_errors, load_schema, parse_ctim_time, rule_errors, schema_errors

JUDGEMENT = {
    "observable": {"type": "ip", "value": "192.0.2.1"}, "source": "s", "priority": 90,
    "confidence": "High", "severity": "High",
}


def test_the_schema_file_ships_with_the_package():
    assert {"NewJudgement", "NewBundle", "NewFeed"} <= set(load_schema()["$defs"])


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"title": "x"}, "title"),
        ({"disposition": 7}, "7"),
        ({"confidence": "Sure"}, "Sure"),
        ({"tlp": "clear"}, "clear"),
        ({"observable": {"type": "cidr", "value": "1"}}, "cidr"),
        ({"priority": "90"}, "'90'"),
        ({"reason": "x" * 1025}, "maxLength 1024"),
        ({"id": "judgement-1"}, "judgement-1"),
    ],
)
def test_schema_rejects(change, fragment):
    errors = schema_errors("NewJudgement", {**JUDGEMENT, **change})
    assert errors and fragment in " ".join(errors)


def test_missing_required_keys():
    assert "source" in " ".join(schema_errors("NewJudgement", {k: v for k, v in JUDGEMENT.items() if k != "source"}))
    assert "feeds" in " ".join(schema_errors("NewBundle", {"source": "s", "feeds": []}))


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"disposition": 1, "disposition_name": "Malicious"}, "Mismatched disposition"),
        ({"valid_time": {"start_time": "2030-01-02T00:00:00Z", "end_time": "2030-01-01T00:00:00Z"}}, "after end_time"),
        ({"valid_time": {"end_time": "2525-01-01T00:01:00.000Z"}}, "outside"),
        ({"valid_time": {"start_time": "1969-12-31T23:59:59Z"}}, "outside"),
        ({"timestamp": "2030-02-30T00:00:00Z"}, "not an ISO 8601"),
    ],
)
def test_rules(change, fragment):
    body = {**JUDGEMENT, **change}
    assert fragment in " ".join(rule_errors(body))
    assert entity_errors("NewJudgement", body)


def test_rules_accept_the_edges():
    body = {**JUDGEMENT, "disposition": 2, "disposition_name": "Malicious",
            "valid_time": {"start_time": "1970-01-01T00:00:00Z", "end_time": "2525-01-01T00:00:59.999Z"}}
    assert entity_errors("NewJudgement", body) == []


def test_time_parsing_with_offsets():
    assert parse_ctim_time("2030-01-01T02:00:00+02:00") == parse_ctim_time("2030-01-01T00:00:00Z")
    assert parse_ctim_time("2030-01-01T00:00Z") is not None and parse_ctim_time("yesterday") is None


def _bodies():
    """Valid bodies and one-change mutations of them, of every kind the sink sends."""
    judgement = {**JUDGEMENT, "type": "judgement", "disposition": 2, "disposition_name": "Malicious", "tlp": "amber",
                 "valid_time": {"start_time": "2030-01-01T00:00:00.000Z", "end_time": "2031-01-01T00:00:00.000Z"},
                 "external_ids": ["exportkit-1"], "id": "transient:judgement-1", "reason": "score 7",
                 "source_uri": "https://tq.example/indicators/1/details",
                 "external_references": [{"source_name": "ThreatQ", "url": "https://tq.example/indicators/1/details"}]}
    mutations = [
        {"title": "x"}, {"disposition": 7}, {"confidence": "Sure"}, {"tlp": "clear"}, {"priority": "90"}, {"priority": 101},
        {"reason": "x" * 1025}, {"id": "judgement-1"}, {"id": "https://ctia.example/ctia/judgement/judgement-" + "0" * 8 + "-0000-0000-0000-" + "0" * 12},
        {"observable": {"type": "cidr", "value": "1"}}, {"observable": {"type": "ip"}}, {"valid_time": {"start_time": "yesterday"}},
        {"valid_time": {"start_time": "2030-01-01T00:00Z"}}, {"external_ids": "x"}, {"external_ids": [1]}, {"source": ""},
        {"external_references": [{"url": "https://x"}]}, {"severity": None}, {"source_uri": "not a uri at all"},
    ]
    yield "NewJudgement", judgement
    for change in mutations:
        yield "NewJudgement", {**judgement, **change}
    yield "NewJudgement", {k: v for k, v in judgement.items() if k != "source"}
    yield "NewBundle", {"type": "bundle", "source": "s", "judgements": [judgement]}
    yield "NewBundle", {"type": "bundle", "source": "s", "judgements": [{**judgement, "tlp": "clear"}]}
    yield "NewBundle", {"type": "bundle", "source": "s", "feeds": []}
    yield "NewBundle", {"type": "bundle", "source": "s", "judgements": judgement}


def test_the_fast_validator_and_the_explaining_one_agree():
    from exportkit_ctia.schema import _fast_validator, _validator

    verdicts = []
    for kind, body in _bodies():
        explained = list(_validator(kind).iter_errors(body))
        assert _fast_validator(kind).is_valid(body) == (not explained), (kind, body)
        assert (schema_errors(kind, body) == []) == (not explained)
        verdicts.append(not explained)
    assert verdicts[0] and verdicts.count(True) >= 3 and verdicts.count(False) >= 15
