"""The canonical record: constructors, JSON form, times, TLP, content hash, types, order."""

from __future__ import annotations

import json
import random
from datetime import datetime, timedelta, timezone

import attrs
import pytest

import exportkit.records as records_module

from exportkit.records import (
    Attribute,
    Indicator,
    format_time,
    id_sort_key,
    parse_time,
)
from exportkit.testing import FIXED_TIME, make_indicator

UTC = timezone.utc



def minimal() -> dict:
    return {
        "source": "ThreatQ",
        "source_id": "42",
        "value": "198.51.100.1",
        "type": "ip",
        "type_name": "IP Address",
        "status": "Active",
        "updated_at": "2024-01-02T03:04:05Z",
    }


# --- constructors ------------------------------------------------------------------


def test_create_converts_ids_and_values_to_strings():
    record = Indicator.create(**{**minimal(), "source_id": 42, "value": 12345})
    assert record.source_id == "42" and record.value == "12345"
    assert record.updated_at == datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_create_refuses_an_unknown_canonical_type():
    with pytest.raises(ValueError):
        Indicator.create(**{**minimal(), "type": "ipaddress"})


def test_from_dict_builds_a_record_with_defaults():
    record = Indicator.from_dict(minimal())
    assert record.tags == () and record.score is None and record.tlp is None and record.expires_at is None


def test_from_dict_refuses_unknown_keys_naming_them():
    with pytest.raises(ValueError, match="unknown field.*scroe"):
        Indicator.from_dict({**minimal(), "scroe": 5})


@pytest.mark.parametrize("key", ["source", "source_id", "value", "type", "type_name", "status", "updated_at"])
def test_from_dict_refuses_each_missing_required_key(key):
    data = minimal()
    del data[key]
    with pytest.raises(ValueError, match=f"missing field.*{key}"):
        Indicator.from_dict(data)


def test_from_dict_reports_bad_values_as_value_error():
    with pytest.raises(ValueError):
        Indicator.from_dict({**minimal(), "updated_at": "yesterday"})
    with pytest.raises(ValueError):
        Indicator.from_dict({**minimal(), "tags": "one-string"})
    with pytest.raises(ValueError):
        Indicator.from_dict({**minimal(), "score": True})


def test_records_are_frozen():
    record = make_indicator()
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        record.value = "x"  # type: ignore[misc]


def test_attributes_accept_mappings_pairs_and_objects():
    record = make_indicator(attributes=[{"name": "Port", "value": 443}, ("Proto", "tcp"), Attribute("Seen", "yes")])
    assert record.attributes == (Attribute("Port", "443"), Attribute("Proto", "tcp"), Attribute("Seen", "yes"))


# --- JSON form ---------------------------------------------------------------------


def test_json_round_trip_keeps_every_field():
    record = make_indicator(
        tags=("apt", "c2"),
        attributes=[("Port", "443")],
        sources=("Feed A", "Feed B"),
        description="multi\nline ☃",
        expires_at="2030-01-01T00:00:00Z",
        score=9.25,
        tlp="red",
    )
    text = json.dumps(record.to_dict())
    again = Indicator.from_dict(json.loads(text))
    assert again == record
    assert again.content_hash == record.content_hash


def test_to_dict_uses_plain_types_and_z_times():
    data = make_indicator(attributes=[("a", "b")]).to_dict()
    assert data["updated_at"] == "2024-01-02T03:04:05.000Z"
    assert data["tags"] == ["test"] and data["attributes"] == [{"name": "a", "value": "b"}]


# --- times -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "2024-01-02T03:04:05Z",
        "2024-01-02T03:04:05z",
        "2024-01-02T03:04:05.000Z",
        "2024-01-02T03:04:05+00:00",
        "2024-01-02T05:04:05+02:00",
        "2024-01-01T22:04:05-05:00",
        "2024-01-02 03:04:05",  # ThreatQ's own format, UTC
        "2024-01-02T03:04:05",  # no zone: UTC
        " 2024-01-02T03:04:05Z ",
        datetime(2024, 1, 2, 3, 4, 5),  # naive: UTC
        datetime(2024, 1, 2, 4, 4, 5, tzinfo=timezone(timedelta(hours=1))),
    ],
)
def test_parse_time_gives_aware_utc_from_every_format(value):
    parsed = parse_time(value)
    assert parsed == datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert parsed.utcoffset() == timedelta(0)


def test_parse_time_empty_and_invalid():
    assert parse_time(None) is None and parse_time("") is None
    for bad in ("not a time", 1704164645, "2024-13-01"):
        with pytest.raises(ValueError):
            parse_time(bad)


def test_record_times_are_aware_utc():
    record = make_indicator(updated_at="2024-01-02 03:04:05", created_at="2024-01-01T00:00:00+05:00")
    assert record.updated_at.tzinfo is not None and record.updated_at.utcoffset() == timedelta(0)
    assert record.created_at == datetime(2023, 12, 31, 19, 0, tzinfo=UTC)


def test_format_time_milliseconds_z():
    assert format_time(datetime(2024, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)) == "2024-01-02T03:04:05.123Z"
    assert format_time(None) is None


# --- TLP ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [("RED", "red"), ("Amber", "amber"), (" green ", "green"), ("WHITE", "white"), ("CLEAR", "white"), ("clear", "white"), ("", None), (None, None)],
)
def test_tlp_is_normalised(given, expected):
    assert make_indicator(tlp=given).tlp == expected


def test_unknown_tlp_is_refused():
    with pytest.raises(ValueError, match="tlp"):
        make_indicator(tlp="purple")


# --- content hash ------------------------------------------------------------------


def test_content_hash_is_stable_across_instances_and_json():
    a = make_indicator()
    b = Indicator.from_dict(json.loads(json.dumps(make_indicator().to_dict())))
    assert a.content_hash == b.content_hash
    assert len(a.content_hash) == 32 and int(a.content_hash, 16) >= 0


def test_content_hash_ignores_touch_times():
    base = make_indicator()
    touched = attrs.evolve(base, updated_at=base.updated_at + timedelta(days=3), created_at=base.updated_at)
    assert touched.content_hash == base.content_hash


@pytest.mark.parametrize(
    "change",
    [
        {"value": "203.0.113.2"},
        {"status": "Whitelisted"},
        {"score": 1.0},
        {"tags": ("test", "new")},
        {"expires_at": datetime(2030, 1, 1, tzinfo=UTC)},
        {"tlp": "red"},
        {"description": "changed"},
    ],
)
def test_content_hash_changes_with_what_a_sink_sends(change):
    base = make_indicator()
    assert attrs.evolve(base, **change).content_hash != base.content_hash


# --- expiry, whitelisting, order -----------------------------------------------------


def test_is_expired_by_status_and_by_time():
    now = FIXED_TIME
    assert make_indicator(status="Expired").is_expired(now)
    assert make_indicator(status=" expired ").is_expired(now)
    assert make_indicator(expires_at=now).is_expired(now)  # at the instant counts
    assert make_indicator(expires_at=now - timedelta(seconds=1)).is_expired(now)
    assert not make_indicator(expires_at=now + timedelta(seconds=1)).is_expired(now)
    assert not make_indicator().is_expired(now)


def test_is_whitelisted_ignores_case():
    assert make_indicator(status="whitelisted").is_whitelisted
    assert not make_indicator(status="Active").is_whitelisted


def test_position_orders_numeric_ids_numerically():
    ids = ["10", "9", "100", "2", "abc", "1"]
    records = [make_indicator(source_id=i) for i in ids]
    assert [r.source_id for r in sorted(records, key=lambda r: r.position)] == ["1", "2", "9", "10", "100", "abc"]


def test_position_orders_by_time_first():
    late_small = make_indicator(source_id="1", updated_at=FIXED_TIME + timedelta(seconds=1))
    early_big = make_indicator(source_id="99")
    assert early_big.position < late_small.position


def test_id_sort_key_numbers_before_strings():
    assert id_sort_key("2") < id_sort_key("10") < id_sort_key("a")


def test_content_hash_is_computed_once_per_record(monkeypatch):
    record = Indicator.create(source="ThreatQ", source_id=1, value="192.0.2.1", type="ip", type_name="IP Address",
                              status="Active", updated_at="2024-01-01T00:00:00Z")
    calls = []
    real = records_module._hash_text
    monkeypatch.setattr(records_module, "_hash_text", lambda record: (calls.append(1), real(record))[1])
    first = record.content_hash
    assert record.content_hash == first and len(calls) == 1
    assert attrs.evolve(record, score=5).content_hash != first, "a changed copy gets its own hash"


def test_content_hash_is_pinned_across_releases():
    """Holdings store these hashes: a different formula would make every held record look changed
    after an upgrade, and send everything again. These values were computed by the first release."""
    record = Indicator.create(
        source="ThreatQ", source_id=42, value="évil.example", type="domain", type_name="FQDN", status="Active", score=7.5,
        tlp="AMBER", tags=["a", "b"], attributes=[("Country", "DE"), ("Port", 8080)], sources=["Feed A"],
        description='x "y" \u2028 z', updated_at="2024-05-01T10:00:00Z", created_at="2024-01-01 00:00:00",
        expires_at="2030-01-01T00:00:00+02:00", link="https://tq/indicators/42/details",
    )
    bare = Indicator.create(source="ThreatQ", source_id="7", value="1.2.3.4", type="ip", type_name="IP Address",
                            status="Whitelisted", updated_at="2024-05-01T10:00:00Z")
    assert record.content_hash == "0f4d0bd26fa2f64b893dbf912e78d72b"
    assert bare.content_hash == "fe7574c80d3826ba152acfcb11eff737"


def test_to_dict_has_every_field_in_field_order():
    record = Indicator.create(source="ThreatQ", source_id=1, value="192.0.2.1", type="ip", type_name="IP Address",
                              status="Active", updated_at="2024-01-01T00:00:00Z", attributes=[("a", "b")])
    assert list(record.to_dict()) == [f.name for f in attrs.fields(Indicator)]
    assert Indicator.from_dict(record.to_dict()) == record


def test_the_fast_hash_text_is_the_reference_text_for_hostile_values():
    """content_hash takes orjson's way; for any value it must hash exactly what json.dumps wrote."""
    rnd = random.Random(7)
    alphabet = [chr(i) for i in range(0x80)] + ["\u2028", "\u2029", "é", "✓", "\U0001F600", "\ufeff", "\x85"]
    scores = [None, 0.0, -0.0, 7.5, 1e16, 1e-5, 1e-7, 123456789.123, float("inf"), float("nan"), 1e300, 5e-324, 2.5e15]

    def text() -> str:
        return "".join(rnd.choice(alphabet) for _ in range(rnd.randint(0, 10)))

    for _ in range(3000):
        record = Indicator.create(
            source=text() or "s", source_id=text() or "1", value=text(), type="ip", type_name=text(), status=text(),
            score=rnd.choice(scores), tags=[text() for _ in range(rnd.randint(0, 3))], attributes=[(text(), text())],
            sources=[text()], description=text(), updated_at="2024-01-01T00:00:00Z",
            expires_at=rnd.choice([None, "2030-01-01T00:00:00.123456Z"]), link=rnd.choice([None, text()]),
        )
        assert records_module._hash_text(record) == records_module._reference_hash_text(record), record
    lone = Indicator.create(source="s", source_id="1", value="\ud800", type="ip", type_name="x", status="",
                            updated_at="2024-01-01T00:00:00Z")
    with pytest.raises(UnicodeEncodeError):  # as the first release did: no hash for text that is not Unicode
        _ = lone.content_hash
