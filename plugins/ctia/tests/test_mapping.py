"""Mapping rules, table-driven; every body checked against the schema and CTIA's cross-field rules."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import attrs
import pytest

from exportkit_ctia.mapping import (
    LEGACY_OWNER,
    namespace_tag,
    owner_key,
    xid_owner,
    EXPIRY_REASON_MAX,
    REASON_MAX,
    NEVER,
    OBSERVABLE_TYPES,
    Unmappable,
    bundle,
    element_of,
    feed_body,
    feed_indicator,
    indicator_link,
    map_judgement,
    normalise_observable,
    render_reason,
)
from exportkit_ctia.schema import entity_errors, schema_errors

NOW = datetime(2030, 6, 1, 12, 0, tzinfo=timezone.utc)
INDICATOR_ID = "https://private.intel.amp.cisco.com:443/ctia/indicator/indicator-0a1b2c3d-0000-4000-8000-000000000001"


@pytest.mark.parametrize(
    ("kind", "value", "expected"),
    [
        ("ip", " 192.0.2.1 ", ("ip", "192.0.2.1")),
        ("ip", "2001:DB8::1", ("ipv6", "2001:db8::1")),
        ("ipv6", "2001:0db8:0000:0000:0000:0000:0000:0001", ("ipv6", "2001:db8::1")),
        ("ipv6", "192.0.2.1", ("ip", "192.0.2.1")),
        ("md5", " D41D8CD98F00B204E9800998ECF8427E ", ("md5", "d41d8cd98f00b204e9800998ecf8427e")),
        ("sha1", "A" * 40, ("sha1", "a" * 40)),
        ("sha256", "F" * 64, ("sha256", "f" * 64)),
        ("domain", "Example.COM.", ("domain", "example.com")),
        ("domain", "bücher.example", ("domain", "xn--bcher-kva.example")),
        ("domain", "_dmarc.example.com", ("domain", "_dmarc.example.com")),
        ("url", "HTTP://Example.COM/Path?Q=1", ("url", "http://example.com/Path?Q=1")),
        ("url", "https://user:Pw@Host.example/x", ("url", "https://user:Pw@host.example/x")),  # the host is case-insensitive
        ("email", "Joe@Bücher.Example", ("email", "Joe@xn--bcher-kva.example")),
        ("file_name", "  evil.exe ", ("file_name", "evil.exe")),
        ("file_path", "C:\\Windows\\evil.exe", ("file_path", "C:\\Windows\\evil.exe")),
        ("mac_address", "00:11:22:33:44:55", ("mac_address", "00:11:22:33:44:55")),
        ("mutex", "Global\\x", ("mutex", "Global\\x")),
        ("registry_key", "HKLM\\Software\\Run", ("registry_key", "HKLM\\Software\\Run")),
        ("user_agent", "Mozilla/5.0", ("user_agent", "Mozilla/5.0")),
        ("user", "alice", ("user", "alice")),
        ("email_subject", "Invoice", ("email_subject", "Invoice")),
    ],
)
def test_observables_are_normalised(kind, value, expected):
    assert normalise_observable(kind, value) == expected


@pytest.mark.parametrize(
    ("kind", "value", "reason"),
    [
        ("cidr", "10.0.0.0/8", "not an observable type"),
        ("sha512", "a" * 128, "not an observable type"),
        ("cve", "CVE-2024-0001", "not an observable type"),
        ("sha384", "a" * 96, "not an observable type"),
        ("string", "x", "not an observable type"),
        ("ip", "10.0.0.0/8", "not a valid IP"),
        ("ip", "999.1.1.1", "not a valid IP"),
        ("ipv6", "2001:db8::g", "not a valid IP"),
        ("md5", "abc", "32 hexadecimal"),
        ("sha1", "z" * 40, "40 hexadecimal"),
        ("sha256", "a" * 63, "64 hexadecimal"),
        ("domain", "localhost", "fully qualified"),
        ("domain", "bad..example", "invalid label"),
        ("domain", "-bad.example", "invalid label"),
        ("domain", "10.0.0.1", "numeric label"),
        ("domain", "a" * 64 + ".example", "invalid label"),
        ("url", "example.com/path", "scheme and a host"),
        ("url", "http://exa mple.com", "white space"),
        ("url", "http://example.com:99999/", "does not parse"),
        ("email", "no-at-sign", "local@domain"),
        ("email", "@example.com", "local@domain"),
        ("email", "joe@localhost", "fully qualified"),
        ("user", "   ", "empty"),
    ],
)
def test_unsupported_types_and_invalid_values_are_skipped(kind, value, reason):
    with pytest.raises(Unmappable, match=reason):
        normalise_observable(kind, value)


def test_the_supported_types_are_the_16_ctim_ones():
    assert len(OBSERVABLE_TYPES) == 16


def test_judgement_body_follows_the_rules(settings, record):
    s = settings(link_host="tq.example.com", disposition="suspicious", confidence="medium", severity="critical", priority=70)
    r = record("192.0.2.1", tags=["apt", "c2"], score=7.5, tlp="green")
    body = map_judgement(r, s, NOW).body
    assert entity_errors("NewJudgement", body) == []
    assert body["observable"] == {"type": "ip", "value": "192.0.2.1"}
    assert (body["disposition"], body["disposition_name"]) == (3, "Suspicious")
    assert (body["confidence"], body["severity"], body["priority"]) == ("Medium", "Critical", 70)
    assert body["source"] == "ThreatQ" and body["tlp"] == "amber"
    assert body["valid_time"] == {"start_time": "2030-06-01T12:00:00.000Z", "end_time": "2030-07-01T12:00:00.000Z"}
    assert body["source_uri"] == f"https://tq.example.com/indicators/{r.source_id}/details"
    assert body["external_references"][0]["url"] == body["source_uri"]
    assert body["reason"] == "ThreatQ score 7.5, status Active, tags: apt, c2"
    assert body["id"] == f"transient:{body['external_ids'][0]}"
    assert body["external_ids"][0].startswith("exportkit-judgement-") and len(body["external_ids"][0]) == len("exportkit-judgement-") + 16 + 1 + 64


@pytest.mark.parametrize(
    ("status", "tlp", "disposition", "expected_tlp"),
    [("Active", "red", (2, "Malicious"), "red"), ("Whitelisted", None, (1, "Clean"), "amber"), ("whitelisted", "white", (1, "Clean"), "amber")],
)
def test_whitelisted_is_clean_and_red_stays_red(settings, record, status, tlp, disposition, expected_tlp):
    body = map_judgement(record("192.0.2.1", status=status, tlp=tlp), settings(), NOW).body
    assert (body["disposition"], body["disposition_name"]) == disposition and body["tlp"] == expected_tlp
    assert entity_errors("NewJudgement", body) == []


@pytest.mark.parametrize(
    ("expiration", "expires_at", "end"),
    [
        ("2 Weeks", None, NOW + timedelta(days=14)),
        ("1 Month", None, NOW + timedelta(days=30)),
        ("6 Months", None, NOW + timedelta(days=180)),
        ("1 Year", None, NOW + timedelta(days=365)),
        ("5 Years", None, NOW + timedelta(days=1825)),
        ("Never", None, NEVER),
        ("Never", NOW + timedelta(hours=3), NOW + timedelta(hours=3)),
        ("1 Month", datetime(2999, 1, 1, tzinfo=timezone.utc), NEVER),
    ],
)
def test_valid_time(settings, record, expiration, expires_at, end):
    body = map_judgement(record("192.0.2.1", expires_at=expires_at), settings(expiration=expiration), NOW).body
    assert body["valid_time"]["end_time"] == end.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    assert entity_errors("NewJudgement", body) == []


@pytest.mark.parametrize("fields", [{"status": "Expired"}, {"expires_at": NOW - timedelta(seconds=1)}, {"expires_at": NOW}])
def test_expired_records_are_not_mapped(settings, record, fields):
    with pytest.raises(Unmappable, match="expired"):
        map_judgement(record("192.0.2.1", **fields), settings(), NOW)


def test_xid_is_stable_across_export_times_and_changes_with_content_and_settings(settings, record):
    s = settings()
    r = record("192.0.2.1")
    xid = map_judgement(r, s, NOW).xid
    assert map_judgement(r, s, NOW + timedelta(days=3)).xid == xid
    assert map_judgement(attrs.evolve(r, score=1), s, NOW).xid != xid
    assert map_judgement(r, settings(disposition="Suspicious"), NOW).xid != xid
    assert map_judgement(r, settings(expiration="Never"), NOW).xid != xid
    assert map_judgement(r, s, NOW, generation=1).xid != xid
    assert map_judgement(r, settings(xid_prefix="other"), NOW).xid.startswith("other-judgement-")


def test_xid_is_namespaced_per_instance_and_says_whose_it_is(settings, record):
    s = settings()
    r = record("192.0.2.1")
    east = map_judgement(r, s, NOW, namespace="east\nthreatq tq.example.com A").xid
    west = map_judgement(r, s, NOW, namespace="west\nthreatq tq.example.com A").xid
    other_collection = map_judgement(r, s, NOW, namespace="east\nthreatq tq.example.com B").xid
    assert len({east, west, other_collection}) == 3
    assert east == map_judgement(r, s, NOW + timedelta(days=1), namespace="east\nthreatq tq.example.com A").xid
    tag = namespace_tag("east\nthreatq tq.example.com A")
    assert east.startswith(f"exportkit-judgement-{tag}-") and xid_owner(east) == owner_key(s, "east\nthreatq tq.example.com A")
    assert xid_owner(west) == owner_key(s, "west\nthreatq tq.example.com A") != xid_owner(east)
    # An operator's own prefix still leads, and the namespace still applies under it.
    mine = map_judgement(r, settings(xid_prefix="acme"), NOW, namespace="east\nthreatq tq.example.com A").xid
    assert mine.startswith(f"acme-judgement-{tag}-")
    # XIDs written before namespacing carry no tag: recognised as such.
    legacy = "exportkit-judgement-" + "ab" * 32
    assert xid_owner(legacy) == LEGACY_OWNER
    assert xid_owner("someone-else-judgement-1") is None


def test_reason_is_rendered_strictly_without_escaping_and_bounded(settings, record):
    r = record("192.0.2.1", tags=["<b>&"], score=None)
    assert render_reason("{{ tags[0] }} {{ value }} {{ attributes }}", r) == "<b>& 192.0.2.1 {}"
    # Room is left for the expiry reason CTIA appends (it refuses a reason past 1024).
    assert len(render_reason("{{ value * 2000 }}", r)) == REASON_MAX == 1024 - EXPIRY_REASON_MAX - 1
    with pytest.raises(Unmappable, match="template failed"):
        render_reason("{{ attributes.missing.deeper }}", r)
    body = map_judgement(record("192.0.2.1", score=None, tags=["t"] * 600), settings(), NOW).body
    assert len(body["reason"]) <= 1024 and entity_errors("NewJudgement", body) == []


@pytest.mark.parametrize("fields", [
    {"score": 7.0, "tags": ["apt", "c2"]}, {"score": 7.25, "tags": []}, {"score": None, "tags": ["{{ x }}", "<b>&", "é \u2028"]},
    {"score": 0.0, "status": "  Review  ", "tags": [" "]}, {"score": 1e16, "status": "", "tags": ["t"] * 600},
    {"score": 10, "status": "Whitelisted", "tags": ["a,b", ""]},
])
def test_the_default_reason_is_what_its_template_renders(record, fields):
    from exportkit_ctia.settings import DEFAULT_REASON, reason_environment

    r = record("192.0.2.1", **fields)
    variables = {"score": int(r.score) if r.score is not None and r.score.is_integer() else r.score, "status": r.status, "tags": list(r.tags)}
    rendered = reason_environment().from_string(DEFAULT_REASON).render(**variables).strip()
    expected = rendered if len(rendered) <= REASON_MAX else rendered[: REASON_MAX - 1] + "\u2026"
    assert render_reason(DEFAULT_REASON, r) == expected


def test_a_custom_reason_is_rendered_once_per_values_of_the_variables_it_names(record, monkeypatch):
    import exportkit_ctia.reasons as mapping

    template = "{{ status }} / {{ tags|join('+') }}"
    compiled = mapping._template(template)
    renders: list[int] = []
    real = compiled.template.render
    monkeypatch.setattr(compiled.template, "render", lambda **kw: (renders.append(1), real(**kw))[1])
    first = render_reason(template, record("192.0.2.1", tags=["a", "b"], status="Active"))
    again = render_reason(template, record("198.51.100.9", tags=["a", "b"], status="Active"))  # another value, same variables
    other = render_reason(template, record("192.0.2.1", tags=["a", "b"], status="Review"))
    assert (first, again, other) == ("Active / a+b", "Active / a+b", "Review / a+b")
    assert len(renders) == 2
    assert render_reason("{{ value }}", record("192.0.2.1")) != render_reason("{{ value }}", record("192.0.2.2"))


def test_links(record):
    r = record("192.0.2.1", source_id="42", link="https://tq.local/indicators/42/details")
    assert indicator_link(r, "tq.example.com") == "https://tq.example.com/indicators/42/details"
    assert indicator_link(r, "http://tq:8080/") == "http://tq:8080/indicators/42/details"
    assert indicator_link(r, None) == "https://tq.local/indicators/42/details"
    assert indicator_link(attrs.evolve(r, link="not a url"), None) is None
    for link, kept in [("HTTPS://TQ.example/indicators/1", True), ("http://[::1", False), ("http://[::1]:8443/x", True),
                       ("ftp://tq/x", False), ("https://", False), ("https://tq.example:99999999/x", True), (" https://a/b ", True)]:
        assert (indicator_link(attrs.evolve(r, link=link), None) is not None) is kept, link


def test_a_record_without_link_has_no_source_uri(settings, record):
    body = map_judgement(record("192.0.2.1"), settings(), NOW).body
    assert "source_uri" not in body and "external_references" not in body
    assert entity_errors("NewJudgement", body) == []


def test_feed_bodies_and_bundles_pass_the_schema(settings, record):
    s = settings(feed="ThreatQ High Confidence")
    judgement = map_judgement(record("192.0.2.1"), s, NOW)
    relationship = element_of(judgement, INDICATOR_ID, s)
    assert relationship["source_ref"] == judgement.transient_id and relationship["target_ref"] == INDICATOR_ID
    assert entity_errors("NewRelationship", relationship) == []
    assert entity_errors("NewIndicator", feed_indicator(s)) == []
    assert entity_errors("NewFeed", feed_body(s, INDICATOR_ID)) == []
    body = bundle(s, judgements=[judgement.body], relationships=[relationship])
    assert schema_errors("NewBundle", body) == [] and set(body) == {"type", "source", "judgements", "relationships"}


def test_authorized_readers_go_on_every_judgement_and_validate(settings, record):
    plain = map_judgement(record("192.0.2.1", tlp="red"), settings(), NOW).body
    assert "authorized_users" not in plain and "authorized_groups" not in plain
    body = map_judgement(record("192.0.2.1", tlp="red"), settings(authorized_users=["u1"], authorized_groups=["org-1"]), NOW).body
    assert body["authorized_users"] == ["u1"] and body["authorized_groups"] == ["org-1"]
    assert entity_errors("NewJudgement", body) == []


def test_reasons_for_long_values_are_rendered_but_not_kept(record):
    import exportkit_ctia.reasons as mapping

    template = "{{ tags|join(',') }}!"
    compiled = mapping._template(template)
    compiled.rendered.clear()
    long_tags = [f"tag-{i}" for i in range(400)]  # a hostile feed: the key alone would be kilobytes
    assert render_reason(template, record("192.0.2.1", tags=long_tags)).startswith("tag-0,tag-1,")
    assert render_reason(template, record("192.0.2.1", tags=["a"])) == "a!"
    assert len(compiled.rendered) == 1
