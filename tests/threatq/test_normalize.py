"""Every normalisation rule of indicator_from_threatq, on hand-made ThreatQ JSON (no server)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import attrs
import pytest

from exportkit.records import Indicator
from exportkit.threatq.vocabulary import THREATQ_TYPES
from exportkit.sources import BadRecord
from exportkit.threatq.normalize import effective_score, html_to_text, indicator_from_threatq, most_restrictive_tlp

TYPES = {101 + i: name for i, name in enumerate(THREATQ_TYPES)}
TYPES[999] = "Custom Thing"
STATUSES = {201: "Active", 202: "Expired", 203: "Indirect", 204: "Review", 205: "Whitelisted"}
IP_TYPE_ID = next(k for k, v in TYPES.items() if v == "IP Address")


def raw(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": 42, "value": "198.51.100.7", "type_id": IP_TYPE_ID, "status_id": 201,
        "score": {"generated_score": 6.5, "manual_score": None},
        "created_at": "2024-01-02 03:04:05", "updated_at": "2024-02-03 04:05:06", "expires_at": None,
    }
    base.update(overrides)
    return base


def norm(item: dict[str, Any], **kwargs: Any) -> Indicator | BadRecord:
    kwargs.setdefault("link_host", "tq.example.com")
    return indicator_from_threatq(item, types=TYPES, statuses=STATUSES, **kwargs)


def ok(item: dict[str, Any], **kwargs: Any) -> Indicator:
    result = norm(item, **kwargs)
    assert isinstance(result, Indicator), result
    return result


@pytest.mark.parametrize(("name", "canonical"), sorted(THREATQ_TYPES.items()))
def test_every_threatq_type_maps_to_its_canonical_type(name: str, canonical: str) -> None:
    type_id = next(k for k, v in TYPES.items() if v == name)
    record = ok(raw(type_id=type_id))
    assert (record.type, record.type_name) == (canonical, name)


def test_unknown_type_becomes_other_and_keeps_its_name() -> None:
    record = ok(raw(type_id=999))
    assert (record.type, record.type_name) == ("other", "Custom Thing")


def test_type_and_status_from_embedded_objects_and_fields_mode_strings() -> None:
    embedded = ok(raw(type_id=1, type={"id": 1, "name": "FQDN", "class": "network"}, status={"id": 9, "name": "Review"}, value="a.example"))
    assert (embedded.type, embedded.status) == ("domain", "Review")
    fields_mode = ok(raw(type_id=None, type="SHA-256", status_id=None, status="Whitelisted", value="ab" * 32))
    assert (fields_mode.type, fields_mode.status, fields_mode.is_whitelisted) == ("sha256", "Whitelisted", True)


def test_status_from_catalogue_by_id() -> None:
    assert ok(raw(status_id=202)).status == "Expired"


@pytest.mark.parametrize(
    ("score", "expected"),
    [
        ({"generated_score": 6.5, "manual_score": 9}, 9.0),
        ({"generated_score": 6.5, "manual_score": 0}, 0.0),  # a manual 0 is set, and wins
        ({"generated_score": 6.5, "manual_score": None}, 6.5),
        ({"generated_score": "3.0", "manual_score": ""}, 3.0),
        (7, 7.0),
        ("4.5", 4.5),
        (None, None),
        ({"generated_score": None, "manual_score": None}, None),
    ],
)
def test_score_manual_wins_else_generated_else_plain(score: Any, expected: float | None) -> None:
    assert ok(raw(score=score)).score == expected
    assert effective_score(score) == expected


@pytest.mark.parametrize(
    ("sources", "tlp"),
    [
        ([{"name": "A", "tlp_id": 3}, {"name": "B", "tlp_id": 2}, {"name": "C", "tlp_id": 4}], "amber"),
        ([{"name": "A", "tlp_id": 4}, {"name": "B", "tlp_id": 1}], "red"),
        ([{"name": "A", "tlp_name": "GREEN"}, {"name": "B", "tlp_name": "white"}], "green"),
        ([{"name": "A", "tlp_name": "CLEAR"}], "white"),
        ([{"name": "A", "tlp_id": "2", "tlp_name": "AMBER"}, {"name": "B", "tlp": {"id": 1, "name": "RED"}}], "red"),
        ([{"name": "A"}, {"name": "B", "tlp_id": None}], None),
        ([], None),
    ],
)
def test_tlp_is_the_most_restrictive_among_sources(sources: list[dict[str, Any]], tlp: str | None) -> None:
    assert ok(raw(sources=sources), unknown_tlp=None).tlp == tlp
    assert most_restrictive_tlp(sources) == tlp


@pytest.mark.parametrize(("unknown", "expected"), [("amber", "amber"), ("red", "red"), (None, None)])
def test_an_unknown_tlp_is_the_configured_one(unknown: str | None, expected: str | None) -> None:
    for sources in ([], [{"name": "CrowdFeed"}], {}):
        assert ok(raw(sources=sources), unknown_tlp=unknown).tlp == expected
    assert ok(raw(sources=[{"tlp_id": 3}]), unknown_tlp=unknown).tlp == "green"  # a known TLP always wins


def test_unknown_tlp_defaults_to_amber() -> None:
    assert ok(raw(sources=[])).tlp == "amber"


def test_the_record_time_is_touched_at_so_child_changes_count() -> None:
    record = ok(raw(touched_at="2024-02-05 00:00:00"))
    assert record.updated_at == datetime(2024, 2, 5, tzinfo=timezone.utc)
    assert ok(raw()).updated_at == datetime(2024, 2, 3, 4, 5, 6, tzinfo=timezone.utc)  # no touched_at: updated_at
    assert ok(raw(touched_at="2024-02-05 00:00:00"), time_field="updated_at").updated_at.day == 3
    assert record.content_hash == ok(raw()).content_hash  # a touch that changed nothing is not a change


def test_times_are_read_in_the_appliance_time_zone() -> None:
    from exportkit.threatq.times import zone

    record = ok(raw(touched_at="2024-07-01 12:00:00", created_at="2024-01-15 08:00:00", expires_at="2030-01-01 00:00:00"),
                tz=zone("Europe/Berlin"))
    assert record.updated_at == datetime(2024, 7, 1, 10, 0, tzinfo=timezone.utc)  # CEST, UTC+2
    assert record.created_at == datetime(2024, 1, 15, 7, 0, tzinfo=timezone.utc)  # CET, UTC+1
    assert record.expires_at == datetime(2029, 12, 31, 23, 0, tzinfo=timezone.utc)


def test_timestamps_are_aware_utc() -> None:
    record = ok(raw(expires_at="2030-01-01 00:00:00"))
    assert record.updated_at == datetime(2024, 2, 3, 4, 5, 6, tzinfo=timezone.utc)
    assert record.created_at == datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    assert record.expires_at is not None and record.expires_at.tzinfo is not None
    assert record.position == (record.updated_at, (0, 42, ""))


def test_link_uses_link_host_and_id() -> None:
    assert ok(raw()).link == "https://tq.example.com/indicators/42/details"
    assert ok(raw(), link_host=None).link is None


def test_source_name_is_configurable() -> None:
    assert ok(raw(), source_name="TQ Lab").source == "TQ Lab"
    assert ok(raw()).source == "ThreatQ"


@pytest.mark.parametrize(
    ("html", "text"),
    [
        ("<p>Observed as <b>C2</b> for <i>QakBot</i> &amp; friends.</p>", "Observed as C2 for QakBot & friends."),
        ("<div>line one<br/>line two</div>\n<ul><li>a</li><li>b</li></ul>", "line one line two a b"),
        ("<p>Contains &lt;script&gt; &mdash; ok</p>", "Contains <script> \u2014 ok"),
        ("<script>alert(1)</script>visible", "visible"),
        ("  plain   text\n\twith space ", "plain text with space"),
        (None, ""),
    ],
)
def test_html_descriptions_become_plain_text(html: str | None, text: str) -> None:
    assert ok(raw(description=html)).description == text
    assert html_to_text(html) == text


def test_tags_attributes_and_sources_as_names() -> None:
    record = ok(raw(
        tags=[{"id": 1, "name": "apt28"}, "phishing", {"name": " "}],
        attributes=[{"name": "Confidence", "value": "High"}, {"name": "Port", "value": 443}, {"value": "nameless"}],
        sources=[{"name": "Emerging Threats", "tlp_id": 3}, {"name": "Internal SOC"}],
    ))
    assert record.tags == ("apt28", "phishing")
    assert [(a.name, a.value) for a in record.attributes] == [("Confidence", "High"), ("Port", "443")]
    assert record.sources == ("Emerging Threats", "Internal SOC")


def test_empty_blocks_served_as_objects_are_tolerated() -> None:
    record = ok(raw(tags={}, attributes={}, sources={}), unknown_tlp=None)
    assert (record.tags, record.attributes, record.sources, record.tlp) == ((), (), (), None)


@pytest.mark.parametrize(
    ("value", "kept"),
    [
        ("  198.51.100.7 \t", "198.51.100.7"),
        ("D41D8CD98F00B204E9800998ECF8427E", "D41D8CD98F00B204E9800998ECF8427E"),
        ("bücher.example", "bücher.example"),
        ("2001:DB8:0:0::1", "2001:DB8:0:0::1"),
        ("999.1.1.1", "999.1.1.1"),
    ],
)
def test_values_pass_through_with_only_white_space_stripped(value: str, kept: str) -> None:
    assert ok(raw(value=value)).value == kept


@pytest.mark.parametrize(
    ("item", "reason"),
    [
        (raw(id=None), "no id"),
        (raw(value=None), "no value"),
        (raw(value=""), "value is empty"),
        (raw(value="   "), "value is empty"),
        (raw(type_id=12345), "type unknown"),
        (raw(updated_at=None), "no touched_at"),
        (raw(updated_at="yesterday-ish"), "bad timestamp"),
        (raw(score={"generated_score": "high", "manual_score": None}), "score is not a number"),
    ],
)
def test_unusable_indicators_become_bad_records(item: dict[str, Any], reason: str) -> None:
    result = norm(item)
    assert isinstance(result, BadRecord)
    assert reason in result.reason
    assert result.source_id == (None if item.get("id") is None else "42")
    assert result.raw == item


def test_a_non_object_is_a_bad_record_not_an_exception() -> None:
    result = indicator_from_threatq(["not", "an", "object"], types=TYPES, statuses=STATUSES, link_host=None)  # type: ignore[arg-type]
    assert isinstance(result, BadRecord) and result.source_id is None


@pytest.mark.parametrize("text", ["plain words", "  spaced \t out\n\nlines  ", "", "tab\tand\r\nCRLF", "naïve ünïcode ✓"])
def test_plain_descriptions_take_the_short_way_to_the_same_text(text: str) -> None:
    from exportkit.threatq.normalize import _TextExtractor

    parser = _TextExtractor()
    parser.feed(text)
    parser.close()
    assert html_to_text(text) == " ".join("".join(parser.parts).split())


def _created_the_long_way(record: Indicator) -> Indicator:
    """The same values through Indicator.create, which converts and checks every field."""
    fields = {f.name: getattr(record, f.name) for f in attrs.fields(Indicator)}
    fields["tags"], fields["sources"] = list(record.tags), list(record.sources)
    fields["attributes"] = [(a.name, a.value) for a in record.attributes]
    return Indicator.create(**fields)


HOSTILE = [
    raw(),
    raw(score="7", tags=[{"name": " apt "}, "x", 5, None, {"id": 1}], attributes=[{"name": 3, "value": None}, {"name": "n", "value": 1.5}]),
    raw(score={"manual_score": "nan", "generated_score": 1}, sources=[{"name": "A", "tlp_id": "2"}, {"name": "B", "tlp": {"name": "CLEAR"}}]),
    raw(score=None, description="<p>a &amp; b</p><script>x</script>", sources={}, tags={}, attributes={}),
    raw(score=10, expires_at="2031-02-03 04:05:06", value=" \u00e9vil.example ", status_id=None, status={"name": " Review "}),
    raw(score={"generated_score": 1e308}, updated_at="2024-02-03T04:05:06", created_at="2024-01-02 03:04:05"),
]


@pytest.mark.parametrize("item", HOSTILE)
@pytest.mark.parametrize("zone", ["UTC", "Europe/Berlin"])
@pytest.mark.parametrize("unknown_tlp", ["amber", None])
def test_the_normaliser_builds_exactly_what_create_would(item: dict[str, Any], zone: str, unknown_tlp: str | None) -> None:
    """indicator_from_threatq takes Indicator.from_canonical's short way: only because its values are canonical."""
    from exportkit.threatq.times import zone as tz_named

    record = ok(item, tz=tz_named(zone), unknown_tlp=unknown_tlp)
    assert repr(record) == repr(_created_the_long_way(record))  # repr: a NaN score equals itself there
    assert all(type(v) is str for v in (*record.tags, *record.sources, record.value, record.type_name, record.status, record.source))
    assert all(t is None or t.tzinfo is timezone.utc for t in (record.created_at, record.updated_at, record.expires_at))
    assert record.score is None or type(record.score) is float
    assert record.content_hash == _created_the_long_way(record).content_hash


def test_from_canonical_still_refuses_a_type_that_is_not_canonical() -> None:
    fields = {f.name: getattr(ok(raw()), f.name) for f in attrs.fields(Indicator)}
    with pytest.raises(ValueError, match="canonical"):
        Indicator.from_canonical(**{**fields, "type": "IP Address"})


def test_long_descriptions_are_not_kept_in_memory() -> None:
    from exportkit.threatq import normalize

    normalize._remembered_html_to_text.cache_clear()
    long_text = "<p>" + "x" * 100_000 + "</p>"
    assert html_to_text(long_text) == "x" * 100_000
    assert html_to_text("<b>short</b>") == "short"
    assert normalize._remembered_html_to_text.cache_info().currsize == 1
