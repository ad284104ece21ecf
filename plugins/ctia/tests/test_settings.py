"""Settings: defaults, CTIM spelling, every problem listed at once, cross-key rules, no secret in reprs."""

from __future__ import annotations

from exportkit.settings import parse_settings
from exportkit_ctia.settings import DEFAULT_REASON, CtiaSettings


def parse(raw):
    return parse_settings(CtiaSettings, raw, file="inst.toml", section="sinks.ctia", environ={"CTR_SECRET": "from-env-secret"})


def test_defaults_and_region_urls():
    settings, problems = parse({"client_id": "c", "client_password": "env:CTR_SECRET"})
    assert problems == []
    assert (settings.region, settings.disposition, settings.confidence, settings.severity) == ("us", "Malicious", "High", "High")
    assert (settings.priority, settings.expiration, settings.source, settings.max_entities) == (85, "1 Month", "ThreatQ", 2000)
    assert (settings.max_retry_after, settings.xid_prefix, settings.reason) == (60.0, "exportkit", DEFAULT_REASON)
    assert settings.base_url == "https://private.intel.amp.cisco.com"
    assert settings.oauth_url == "https://visibility.amp.cisco.com/iroh/oauth2/token"
    assert settings.client_password.reveal() == "from-env-secret"
    assert "from-env-secret" not in repr(settings)


def test_choices_are_case_insensitive_and_stored_in_ctim_spelling():
    settings, problems = parse(
        {"client_id": "c", "client_password": "p", "region": "EU", "disposition": "suspicious", "confidence": "none",
         "severity": "CRITICAL", "expiration": "6 months"}
    )
    assert problems == []
    assert (settings.region, settings.disposition, settings.confidence, settings.severity, settings.expiration) == (
        "eu", "Suspicious", "None", "Critical", "6 Months")
    assert settings.base_url == "https://private.intel.eu.amp.cisco.com"
    assert settings.oauth_url == "https://visibility.eu.amp.cisco.com/iroh/oauth2/token"


def test_every_problem_is_listed_at_once():
    settings, problems = parse(
        {"client_password": "env:MISSING", "region": "mars", "disposition": "evil", "confidence": "sure", "severity": "x",
         "priority": 101, "expiration": "3 days", "max_entities": 0, "reason": "{{ nope }}", "xid_prefix": "a,b",
         "api_url": "ftp://x", "ca_bundle": "/nonexistent/ca.pem", "timeout": 0, "typo_key": 1}
    )
    assert settings is None
    keys = sorted(p.key.removeprefix("sinks.ctia.") for p in problems)
    assert keys == sorted(
        ["client_id", "client_password", "region", "disposition", "confidence", "severity", "priority", "expiration",
         "max_entities", "reason", "xid_prefix", "api_url", "ca_bundle", "timeout", "typo_key"]
    )


def test_cross_key_rules():
    _, problems = parse({"client_id": "c", "client_password": "p", "api_url": "http://127.0.0.1:1", "feed": "F", "max_entities": 1})
    messages = {p.key.removeprefix("sinks.ctia."): p.message for p in problems}
    assert set(messages) == {"token_url", "max_entities"}
    _, problems = parse({"client_id": "c", "client_password": "p", "token_url": "http://127.0.0.1:1/t"})
    assert [p.key for p in problems] == ["sinks.ctia.api_url"]
    _, problems = parse({"client_id": "c", "client_password": "p", "feed": "  "})
    assert [p.key for p in problems] == ["sinks.ctia.feed"]


def test_explicit_urls_and_tls(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    settings, problems = parse(
        {"client_id": "c", "client_password": "p", "api_url": "http://127.0.0.1:5000/", "token_url": "http://127.0.0.1:5000/iroh/oauth2/token",
         "ca_bundle": str(ca)}
    )
    assert problems == []
    assert settings.base_url == "http://127.0.0.1:5000" and settings.verify == str(ca)
    _, problems = parse({"client_id": "c", "client_password": "p", "ca_bundle": str(ca), "verify_tls": False})
    assert [p.key for p in problems] == ["sinks.ctia.verify_tls"]


def test_feed_dispositions_default_to_the_blocklist_and_are_checked():
    settings, problems = parse({"client_id": "c", "client_password": "p"})
    assert settings.feed_dispositions == ["Malicious", "Suspicious"]
    settings, problems = parse({"client_id": "c", "client_password": "p", "feed_dispositions": ["suspicious", "COMMON"]})
    assert problems == [] and settings.feed_dispositions == ["Suspicious", "Common"]
    _, problems = parse({"client_id": "c", "client_password": "p", "feed_dispositions": ["Evil"]})
    assert [p.key for p in problems] == ["sinks.ctia.feed_dispositions"]
    _, problems = parse({"client_id": "c", "client_password": "p", "feed": "F", "feed_dispositions": []})
    assert [p.key for p in problems] == ["sinks.ctia.feed_dispositions"]


def test_authorized_readers_are_lists_of_names():
    settings, problems = parse({"client_id": "c", "client_password": "p"})
    assert settings.authorized_users == [] and settings.authorized_groups == []
    settings, problems = parse({"client_id": "c", "client_password": "p", "authorized_users": ["a"], "authorized_groups": "org-1"})
    assert problems == [] and settings.authorized_users == ["a"] and settings.authorized_groups == ["org-1"]
    _, problems = parse({"client_id": "c", "client_password": "p", "authorized_users": [" "]})
    assert [p.key for p in problems] == ["sinks.ctia.authorized_users"]
