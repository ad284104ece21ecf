"""ThreatQSettings and ThreatQSource: config parsing, the Source protocol, incremental and large pulls."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from exportkit.errors import SourceAuthError, SourceError
from exportkit.records import Indicator, parse_time
from exportkit.settings import parse_settings
from exportkit.sources import BadRecord, IncompleteRead, source_types
from exportkit.threatq.client import ThreatQClient
from exportkit.threatq.emulator import ThreatQEmulator
from exportkit.threatq.source import SOURCE_TYPE, ThreatQSettings, ThreatQSource


def parse(**table: Any):
    return parse_settings(ThreatQSettings, table, file="tq.toml", section="source", environ={"TQ_PASSWORD": "pw-from-env"})


MINIMAL = {"host": "tq.example.com", "client_id": "cid", "username": "a@example.com", "password": "env:TQ_PASSWORD", "collection": "CTR Export"}


def test_registry_points_at_this_source_type() -> None:
    assert source_types()["threatq"] is SOURCE_TYPE
    assert SOURCE_TYPE.settings_class is ThreatQSettings


def test_defaults() -> None:
    settings, problems = parse(**MINIMAL)
    assert problems == [] and settings is not None
    assert (settings.type, settings.auth, settings.grant, settings.status) == ("threatq", "password", "password", "Review")
    assert (settings.verify_tls, settings.page_size, settings.timeout, settings.source_name) == (True, 500, 60.0, "ThreatQ")
    assert (settings.timezone, settings.window_field, settings.unknown_tlp, settings.with_blocks) == ("UTC", "touched_at", "amber", None)
    assert settings.password is not None and settings.password.reveal() == "pw-from-env"
    assert "pw-from-env" not in repr(settings)


def test_scope_names_the_host_and_the_collection_however_the_host_is_written() -> None:
    plain, _ = parse(**MINIMAL)
    as_url, _ = parse(**{**MINIMAL, "host": "https://TQ.example.com/api/"})
    other_collection, _ = parse(**{**MINIMAL, "collection": "Other"})
    other_host, _ = parse(**{**MINIMAL, "host": "tq2.example.com"})
    assert plain.scope == as_url.scope and "tq.example.com" in plain.scope and "CTR Export" in plain.scope
    assert len({plain.scope, other_collection.scope, other_host.scope}) == 3


def test_required_keys_reported_together() -> None:
    _, problems = parse()
    assert {p.key for p in problems} >= {"source.host", "source.client_id", "source.collection"}


@pytest.mark.parametrize(
    ("changes", "key", "fragment"),
    [
        ({"page_size": 0}, "source.page_size", "below the minimum"),
        ({"page_size": 5001}, "source.page_size", "above the maximum"),
        ({"host": "ftp://tq.example.com"}, "source.host", "not a ThreatQ host"),
        ({"auth": "kerberos"}, "source.auth", "not allowed"),
        ({"type": "misp"}, "source.type", "not allowed"),
        ({"verify_tls": "yes"}, "source.verify_tls", "true or false"),
        ({"password": None, "username": None}, "source.username", "required for the password grant"),
        ({"auth": "client_credentials"}, "source.client_secret", "required"),
        ({"colection": "x"}, "source.colection", "did you mean 'collection'"),
        ({"timezone": "Mars/Olympus"}, "source.timezone", "unknown time zone"),
        ({"window_field": "created_at"}, "source.window_field", "not allowed"),
        ({"unknown_tlp": "purple"}, "source.unknown_tlp", "not allowed"),
    ],
)
def test_invalid_settings_are_named(changes: dict[str, Any], key: str, fragment: str) -> None:
    table = {k: v for k, v in {**MINIMAL, **changes}.items() if v is not None}
    settings, problems = parse(**table)
    assert settings is None
    assert any(p.key == key and fragment in str(p) for p in problems), problems


def test_client_secret_without_password_selects_client_credentials() -> None:
    settings, problems = parse(host="h", client_id="c", client_secret="s3cret-value", collection="C")
    assert problems == [] and settings is not None
    assert settings.grant == "client_credentials"
    both, _ = parse(**MINIMAL, client_secret="s3cret-value")
    assert both is not None and both.grant == "password"


def settings_for(tq: ThreatQEmulator, **overrides: Any) -> ThreatQSettings:
    c = tq.credentials
    table = {"host": tq.url, "client_id": c.client_id, "username": c.username, "password": c.password, "collection": "CTR Export"}
    table.update(overrides)
    settings, problems = parse_settings(ThreatQSettings, table, file="tq.toml", section="source")
    assert settings is not None, problems
    return settings


def open_source(tq: ThreatQEmulator, fast_retry=None, **overrides: Any) -> ThreatQSource:
    source = SOURCE_TYPE.factory(settings_for(tq, **overrides), config_dir=Path("."), logger=None)
    if fast_retry is not None:
        s = source.settings
        source.client = ThreatQClient(s.host, client_id=s.client_id, username=s.username, password=s.password,
                                      client_secret=s.client_secret, auth=s.grant, retry=fast_retry)
    source.open()
    return source


@pytest.mark.integration
def test_pull_yields_sorted_records_and_bad_records(tq) -> None:
    tq.add_indicator("", "FQDN", "Active")  # empty value: a bad record, not an exception
    source = open_source(tq)
    try:
        items = list(source.pull(None, None))
    finally:
        source.close()
    records = [i for i in items if isinstance(i, Indicator)]
    bad = [i for i in items if isinstance(i, BadRecord)]
    assert len(items) == source.total == len(tq.collection_ids("CTR Export"))
    assert [r.position for r in records] == sorted(r.position for r in records)
    assert any("value is empty" in b.reason for b in bad)
    assert all(r.link == f"https://127.0.0.1/indicators/{r.source_id}/details" for r in records)
    assert {r.status for r in records} == {"Active", "Review", "Whitelisted", "Expired"}


@pytest.mark.integration
def test_link_host_and_source_name_are_used(tq) -> None:
    source = open_source(tq, link_host="tq.example.com", source_name="TQ Lab")
    record = next(i for i in source.pull(None, None) if isinstance(i, Indicator))
    source.close()
    assert record.link.startswith("https://tq.example.com/indicators/")
    assert record.source == "TQ Lab"


@pytest.mark.integration
def test_client_credentials_source(tq) -> None:
    source = open_source(tq, username=None, password=None, client_secret=tq.credentials.client_secret)
    assert sum(1 for _ in source.pull(None, None)) == len(tq.collection_ids("CTR Export"))
    assert tq.tokens.issued["client_credentials"] == 1
    source.close()


@pytest.mark.integration
def test_open_fails_clearly(tq) -> None:
    with pytest.raises(SourceAuthError, match="analyst@example.com") as info:
        open_source(tq, password="not-it-at-all")
    assert "not-it-at-all" not in str(info.value)
    with pytest.raises(SourceError, match="existing collections: .*'High Score'"):
        open_source(tq, collection="Nope")


@pytest.mark.integration
def test_incremental_pulls_see_changes_between_runs(tq) -> None:
    source = open_source(tq)
    run1_start = datetime.now(timezone.utc)
    first = [i for i in source.pull(None, run1_start)]
    checkpoint = max(i.updated_at for i in first if isinstance(i, Indicator))
    changed = int(first[0].source_id)
    time.sleep(1.1)  # ThreatQ timestamps have whole seconds: the change lands after run 1 started
    tq.update_indicator(changed, status_name="Whitelisted")
    added = tq.add_indicator("203.0.113.9", "IP Address", "Active")["id"]
    run2_start = datetime.now(timezone.utc) + timedelta(seconds=1)
    second = list(source.pull(checkpoint - timedelta(minutes=5), run2_start))
    source.close()
    ids = [i.source_id for i in second]
    assert str(changed) in ids and str(added) in ids
    whitelisted = next(i for i in second if i.source_id == str(changed))
    assert isinstance(whitelisted, Indicator) and whitelisted.is_whitelisted
    assert len(second) < len(first)  # incremental: only the overlap and the changes


@pytest.mark.integration
@pytest.mark.parametrize("which", ["already-yielded", "not-yet-yielded"])
def test_change_during_a_pull_is_in_this_pull_or_the_next(tq, which: str) -> None:
    source = open_source(tq, page_size=7)
    order = [str(i) for i in tq.collection_ids("CTR Export")]
    target = order[2] if which == "already-yielded" else order[50]
    until = datetime.now(timezone.utc).replace(microsecond=0)  # the run start; changes stamp at or after it
    seen: list[str] = []
    for item in source.pull(None, until):
        seen.append(item.source_id)
        if len(seen) == 10:
            tq.update_indicator(int(target), description="<p>edited</p>")
    unchanged = set(order) - {target}
    assert unchanged <= set(seen)  # nothing else lost
    nxt = [i for i in source.pull(None, None) if i.source_id == target]
    source.close()
    assert target in seen or nxt
    assert nxt and nxt[-1].description == "edited"  # the next pull from the same since has the new version
    if which == "not-yet-yielded":
        assert target not in seen  # it moved past until, so only the next pull could carry it


@pytest.mark.integration
def test_historical_window(tq) -> None:
    ids = tq.collection_ids("CTR Export")
    since = parse_time(tq.indicator(ids[10])["touched_at"])
    until = parse_time(tq.indicator(ids[-10])["touched_at"])
    source = open_source(tq)
    items = list(source.pull(since, until))
    source.close()
    assert items and all(since <= i.updated_at < until for i in items if isinstance(i, Indicator))
    want = tq.collection_ids("CTR Export", since=tq.indicator(ids[10])["touched_at"], until=tq.indicator(ids[-10])["touched_at"])
    assert [int(i.source_id) for i in items] == want


@pytest.mark.integration
def test_current_ids_are_the_collection_now(tq) -> None:
    source = open_source(tq)
    ids = tq.collection_ids("CTR Export")
    tq.remove_indicator(ids[0])
    tq.update_indicator(ids[1], type_name="Mutex")  # leaves the collection (not a network/file type)
    current = list(source.current_ids())
    source.close()
    assert current == [str(i) for i in tq.collection_ids("CTR Export")]
    assert str(ids[0]) not in current and str(ids[1]) not in current
    bodies = [c for c in tq.app.calls if c[1] == "/api/indicators/query"]
    assert bodies  # paged through the same query endpoint


@pytest.mark.integration
def test_check_describes_what_was_found(tq) -> None:
    source = SOURCE_TYPE.factory(settings_for(tq), config_dir=Path("."), logger=None)
    lines = source.check()  # opens on demand
    source.close()
    assert "signed in as analyst@example.com (password grant)" in lines[0]
    assert f"'CTR Export' (id 7): {len(tq.collection_ids('CTR Export'))} indicators" in lines[1]
    assert "34 indicator types, 5 statuses" in lines[2]
    assert lines[3] == "times read in UTC; window on touched_at"


@pytest.mark.integration
def test_check_says_how_far_threatq_clock_is(tq) -> None:
    tq.configure(clock_offset=-300)
    source = SOURCE_TYPE.factory(settings_for(tq, timezone="Europe/Berlin"), config_dir=Path("."), logger=None)
    lines = source.check()
    source.close()
    assert lines[3].startswith("times read in Europe/Berlin; window on touched_at; its clock is 30")
    assert lines[3].endswith("s behind this host's")


@pytest.mark.integration
def test_a_500_and_token_expiry_during_a_pull(tq, fast_retry) -> None:
    source = open_source(tq, fast_retry, collection="All Indicators", page_size=20)
    tq.fail_on_call(4, status=502)
    items = []
    for item in source.pull(None, None):
        items.append(item)
        if len(items) == 150:
            tq.expire_tokens()
    source.close()
    assert [int(i.source_id) for i in items] == tq.collection_ids("All Indicators")


@pytest.mark.integration
def test_pull_50000_indicators(fast_retry) -> None:
    # Correctness at scale only: how fast the pull is belongs to `make bench`,
    # where it is measured beside a pass-through client, not to a timed test.
    with ThreatQEmulator(indicators=50_000, seed=11) as tq:
        source = open_source(tq, fast_retry, collection="All Indicators", page_size=1000)
        count = bad = 0
        last = None
        for item in source.pull(None, datetime.now(timezone.utc)):
            count += 1
            if isinstance(item, BadRecord):
                bad += 1
            else:
                assert last is None or item.position >= last
                last = item.position
        source.close()
        assert count == len(tq.collection_ids("All Indicators")) == 50_000
        assert source.total == 50_000
    assert 0 < bad < 1000  # the generator's empty values


@pytest.mark.integration
def test_next_pages_are_fetched_while_the_current_one_is_normalised(tq: ThreatQEmulator) -> None:
    # One request at a time, to count pages (tests/threatq/test_paging_ahead.py has pages in flight).
    source = open_source(tq, page_size=10, collection="All Indicators", pages_in_flight=1)
    queries = lambda: sum(1 for _, path in tq.app.calls if path == "/api/indicators/query")  # noqa: E731
    pulled = source.pull(None, None)
    next(pulled)  # the first record of the first page is being used
    deadline, seen = time.monotonic() + 10, -1
    while seen != queries() and time.monotonic() < deadline:  # until the reader blocks on the full queue
        seen = queries()
        time.sleep(0.3)
    # Without reading ahead, 2 (page 1 is released once page 2 confirms the order);
    # with it, the pages of two waiting lists and the one being built, and no more.
    assert 4 <= queries() <= 6
    assert len(list(pulled)) == 299
    pulled.close()
    source.close()


def test_current_ids_that_miss_some_raise_incomplete_read(tq) -> None:
    tq.configure(page_cap=100)
    source = open_source(tq, collection="All Indicators")
    # The second page comes back empty although total says more: paging ends early. (With it go the two
    # pages asked ahead, in whatever order the three arrive.)
    tq.fail_on_call(2, status=200, body={"data": [], "total": 300, "limit": 100, "offset": 0}, count=3)
    got: list[str] = []
    with pytest.raises(IncompleteRead) as info:
        for ident in source.current_ids():
            got.append(ident)
    source.close()
    assert len(got) == info.value.read < info.value.total == 300
    assert "read 100 ids of the 300" in str(info.value)


@pytest.mark.integration
def test_current_ids_through_a_page_cap_are_complete(tq) -> None:
    tq.configure(page_cap=40)
    source = open_source(tq, collection="All Indicators")
    assert sorted(int(i) for i in source.current_ids()) == sorted(tq.collection_ids("All Indicators"))
    source.close()


@pytest.mark.integration
def test_now_is_threatq_clock(tq) -> None:
    tq.configure(clock_offset=120)
    source = open_source(tq)
    now = source.now()
    source.close()
    assert now is not None
    ahead = (now - datetime.now(timezone.utc)).total_seconds()
    assert 119 < ahead < 123


@pytest.mark.integration
def test_a_server_that_leaves_sources_out_stops_the_pull(tq) -> None:
    tq.configure(fields_required=True)
    source = open_source(tq)
    original = source.client.post

    def ignoring_fields(path, **kwargs):  # a server that does not honour the fields list
        body = dict(kwargs.get("json") or {})
        body.pop("fields", None)
        return original(path, **{**kwargs, "json": body})

    source.client.post = ignoring_fields  # type: ignore[method-assign]
    with pytest.raises(SourceError, match="without their 'sources'"):
        list(source.pull(None, None))
    source.close()


@pytest.mark.integration
def test_realistic_server_pull_has_sources_and_tlp(tq) -> None:
    tq.configure(page_cap=50, fields_required=True, touch_only_children=True)
    source = open_source(tq, page_size=200)
    items = list(source.pull(None, None))
    source.close()
    records = [i for i in items if isinstance(i, Indicator)]
    assert len(items) == len(tq.collection_ids("CTR Export"))
    assert {"red", "amber", "green", "white"} <= {r.tlp for r in records}
    assert any(r.attributes for r in records) and any(r.sources for r in records)


@pytest.mark.integration
def test_sources_without_tlp_take_the_configured_unknown_tlp(tq) -> None:
    tq.configure(sources_without_tlp=True)
    for unknown, expected in (("amber", {"amber"}), ("red", {"red"}), ("none", {None})):
        source = open_source(tq, unknown_tlp=unknown)
        assert {i.tlp for i in source.pull(None, None) if isinstance(i, Indicator)} == expected
        source.close()


@pytest.mark.integration
def test_a_non_utc_appliance_with_the_timezone_setting(tq) -> None:
    tq.configure(timezone="Asia/Kolkata")
    ids = tq.collection_ids("CTR Export")
    since_s = tq.indicator(ids[20])["touched_at"]
    since = parse_time(since_s)  # UTC
    want = tq.collection_ids("CTR Export", since=since_s)
    right = open_source(tq, timezone="Asia/Kolkata")
    got = [i for i in right.pull(since, None)]
    right.close()
    assert [int(i.source_id) for i in got] == want
    assert got[0].updated_at == since
    wrong = open_source(tq)  # read as UTC: times 5h30 off, so the window is too
    assert [int(i.source_id) for i in wrong.pull(since, None)] != want
    wrong.close()
