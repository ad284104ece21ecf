"""Finding Data Collections and paging their indicators safely (keyset paging) against the emulator."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from exportkit.errors import SourceError
from exportkit.records import parse_time
from exportkit.threatq.collections import (
    DEFAULT_WITH,
    find_collection,
    format_tq_time,
    iter_indicators,
    list_collections,
    load_catalogues,
    with_window,
)
from exportkit.threatq.emulator import ThreatQEmulator


def test_with_window_ands_the_window_with_the_saved_filters() -> None:
    saved = {"criteria": {"status_name": "Active"}, "filters": {"score": {"+gte": 7}}}
    query = with_window(saved, gt="2024-01-01 00:00:00", lt="2024-02-01 00:00:00")
    assert query["criteria"] == {"status_name": "Active"}
    assert query["filters"] == {"+and": [{"score": {"+gte": 7}}, {"updated_at": {"+gt": "2024-01-01 00:00:00", "+lt": "2024-02-01 00:00:00"}}]}
    assert saved["filters"] == {"score": {"+gte": 7}}  # the saved query is not changed
    assert with_window({"criteria": {}, "filters": {}}, lt="x")["filters"] == {"+and": [{"updated_at": {"+lt": "x"}}]}
    assert with_window(saved) == saved


def test_format_tq_time_is_utc_seconds() -> None:
    aware = datetime(2024, 5, 6, 9, 8, 7, 654321, tzinfo=timezone(timedelta(hours=2)))
    assert format_tq_time(aware) == "2024-05-06 07:08:07"


@pytest.mark.integration
@pytest.mark.parametrize("mode", ["string", "object"])
def test_find_collection_reads_json_as_string_or_object(mode: str, fast_retry) -> None:
    with ThreatQEmulator(indicators=10, seed=1, collection_json=mode) as tq:
        from exportkit.secrets import Secret
        from exportkit.threatq.client import ThreatQClient

        c = tq.credentials
        with ThreatQClient(tq.url, client_id=c.client_id, username=c.username, password=Secret(c.password), retry=fast_retry) as client:
            found = find_collection(client, "High Score")
            assert isinstance(tq.search_entries()[1]["json"], str if mode == "string" else dict)
    assert found.name == "High Score"
    assert found.api_query == {"criteria": {}, "filters": {"score": {"+gte": 7}}}
    assert found.hash


@pytest.mark.integration
def test_unknown_collection_lists_the_existing_names(make_client) -> None:
    with pytest.raises(SourceError) as info:
        find_collection(make_client(), "CTR Exports")
    message = str(info.value)
    assert "'CTR Exports'" in message
    for name in ("CTR Export", "High Score", "All Indicators"):
        assert repr(name) in message


@pytest.mark.integration
def test_collection_names_match_exactly_with_a_hint(make_client) -> None:
    with pytest.raises(SourceError, match="did you mean 'CTR Export'"):
        find_collection(make_client(), "ctr export")


@pytest.mark.integration
def test_collection_list_is_paged(tq, make_client) -> None:
    for n in range(250):
        tq.add_collection(f"Extra {n:03d}", {"criteria": {}, "filters": {"type_name": "MD5"}})
    client = make_client()
    assert len(list_collections(client)) == 254
    assert find_collection(client, "Extra 249").api_query["filters"] == {"type_name": "MD5"}
    offsets = [c for c in tq.app.calls if c == ("GET", "/api/search/query")]
    assert len(offsets) >= 3  # 200 + 54, then the short page ends it


@pytest.mark.integration
def test_catalogues_come_from_the_server_not_hard_coded_ids(make_client) -> None:
    types, statuses = load_catalogues(make_client())
    assert len(types) == 34 and types[101] == "ASN"
    assert statuses == {201: "Active", 202: "Expired", 203: "Indirect", 204: "Review", 205: "Whitelisted"}


def _pull(client, tq, name="All Indicators", **kwargs):
    return list(iter_indicators(client, find_collection(client, name).api_query, **kwargs))


def _positions(items):
    return [(parse_time(i["updated_at"]), int(i["id"])) for i in items]


@pytest.mark.integration
@pytest.mark.parametrize("name", ["CTR Export", "High Score", "All Indicators", "Active IPs"])
def test_full_pull_matches_the_collection_in_order(tq, make_client, name: str) -> None:
    items = _pull(make_client(), tq, name, page_size=37)
    assert [int(i["id"]) for i in items] == tq.collection_ids(name)
    assert _positions(items) == sorted(_positions(items))
    assert items and all({"attributes", "sources", "score", "type", "status", "tags"} <= set(i) for i in items)


@pytest.mark.integration
def test_query_asks_for_blocks_sorted_by_updated_at(tq, make_client) -> None:
    seen = []
    client = make_client()
    original = client.post

    def spy(path, **kwargs):
        seen.append(kwargs)
        return original(path, **kwargs)

    client.post = spy  # type: ignore[method-assign]
    _pull(client, tq, page_size=100)
    assert seen[0]["params"]["with"] == DEFAULT_WITH
    assert seen[0]["params"]["sort"] == "updated_at"
    assert all(call["params"]["limit"] == 100 for call in seen)


@pytest.mark.integration
def test_total_is_reported_once(tq, make_client) -> None:
    totals: list[int] = []
    _pull(make_client(), tq, page_size=50, on_total=totals.append)
    assert totals == [300]


@pytest.mark.integration
def test_more_than_a_page_sharing_one_timestamp(tq, make_client) -> None:
    ids = tq.collection_ids("All Indicators")[:230]
    tq.touch(ids, at="2030-01-01 00:00:00")
    items = _pull(make_client(), tq, page_size=50)
    got = [int(i["id"]) for i in items]
    assert sorted(got) == sorted(tq.collection_ids("All Indicators"))
    assert len(got) == len(set(got)) == 300
    assert got[-230:] == sorted(ids)


@pytest.mark.integration
def test_page_size_one_still_terminates_and_is_complete(tq, make_client) -> None:
    tq.touch(tq.collection_ids("High Score")[:5], at="2030-01-01 00:00:00")
    items = _pull(make_client(), tq, "High Score", page_size=1)
    assert [int(i["id"]) for i in items] == tq.collection_ids("High Score")


@pytest.mark.integration
@pytest.mark.parametrize("move", ["earlier", "boundary", "same-second-group"])
def test_an_indicator_changed_while_paging_is_not_lost(tq, make_client, move: str) -> None:
    """Plain offset paging would skip the item at the page boundary; keyset paging must not."""
    client = make_client()
    if move == "same-second-group":
        tq.touch(tq.collection_ids("All Indicators")[:120], at="2029-01-01 00:00:00")
    before = tq.collection_ids("All Indicators")
    page = 40
    got: list[int] = []
    changed: int | None = None
    for item in iter_indicators(client, find_collection(client, "All Indicators").api_query, page_size=page):
        got.append(int(item["id"]))
        if len(got) == page:  # the end of page one: change an item already yielded
            changed = got[0] if move != "boundary" else got[-1]
            tq.update_indicator(changed, description="changed while paging")
    assert changed is not None
    # Every unchanged indicator was yielded, and the changed one too (its new updated_at is inside the open window).
    assert set(before) <= set(got)
    assert got.count(changed) == 2
    assert len(got) == len(before) + 1


@pytest.mark.integration
def test_changed_during_a_bounded_pull_is_in_the_next_pull(tq, make_client) -> None:
    client = make_client()
    query = find_collection(client, "All Indicators").api_query
    since = parse_time(tq.indicator(tq.collection_ids("All Indicators")[100])["updated_at"])
    until = datetime.now(timezone.utc)  # the engine passes the run start
    first: list[int] = []
    changed = None
    for item in iter_indicators(client, query, since=since, until=until, page_size=25):
        first.append(int(item["id"]))
        if len(first) == 30:
            changed = first[3]
            tq.update_indicator(changed, status_name="Whitelisted")
    expected = [i for i in tq.collection_ids("All Indicators") if i != changed]
    expected = [i for i in expected if parse_time(tq.indicator(i)["updated_at"]) >= since]
    assert [i for i in first if i != changed] == expected
    second = [int(i["id"]) for i in iter_indicators(client, query, since=since, until=None, page_size=25)]
    assert changed in second
    assert second[-1] == changed  # it moved to the end: newest updated_at


@pytest.mark.integration
def test_historical_window_is_exact(tq, make_client) -> None:
    ids = tq.collection_ids("All Indicators")
    since_s, until_s = tq.indicator(ids[50])["updated_at"], tq.indicator(ids[200])["updated_at"]
    since, until = parse_time(since_s), parse_time(until_s)
    items = _pull(make_client(), tq, since=since, until=until, page_size=30)
    assert [int(i["id"]) for i in items] == tq.collection_ids("All Indicators", since=since_s, until=until_s)
    assert all(since <= parse_time(i["updated_at"]) < until for i in items)


@pytest.mark.integration
def test_sub_second_bounds_are_respected(tq, make_client) -> None:
    tq.touch([tq.collection_ids("All Indicators")[0]], at="2031-01-01 00:00:00")
    tq.touch([tq.collection_ids("All Indicators")[0]], at="2031-01-01 00:00:01")
    edge = datetime(2031, 1, 1, 0, 0, 0, 500000, tzinfo=timezone.utc)
    after = _pull(make_client(), tq, since=edge, page_size=10)
    before = _pull(make_client(), tq, since=edge - timedelta(seconds=10), until=edge, page_size=10)
    assert [i["updated_at"] for i in after] == ["2031-01-01 00:00:01"]
    assert [i["updated_at"] for i in before] == ["2031-01-01 00:00:00"]


@pytest.mark.integration
def test_a_500_in_the_middle_of_paging_is_retried(tq, make_client) -> None:
    client = make_client()
    query = find_collection(client, "All Indicators").api_query
    tq.fail_on_call(3, status=500)
    items = list(iter_indicators(client, query, page_size=50))
    assert [int(i["id"]) for i in items] == tq.collection_ids("All Indicators")
    assert tq.faults.take("/api/indicators/query") is None  # the planned fault was consumed


@pytest.mark.integration
def test_token_expiry_in_the_middle_of_paging(tq, make_client) -> None:
    client = make_client()
    query = find_collection(client, "All Indicators").api_query
    got = []
    for item in iter_indicators(client, query, page_size=50):
        got.append(int(item["id"]))
        if len(got) == 120:
            tq.expire_tokens()
    assert got == tq.collection_ids("All Indicators")
    assert client.token_count == 2


@pytest.mark.integration
def test_fields_mode_for_ids_only(tq, make_client) -> None:
    items = _pull(make_client(), tq, page_size=100, with_=None, fields=["id"])
    assert set(items[0]) == {"id", "updated_at"}
    assert [i["id"] for i in items] == tq.collection_ids("All Indicators")


@pytest.mark.integration
def test_plain_offset_paging_would_lose_an_item_in_the_same_scenario(tq, make_client) -> None:
    """Guards the test above: the emulator does reproduce the loss that keyset paging avoids."""
    client = make_client()
    query = find_collection(client, "All Indicators").api_query
    before = tq.collection_ids("All Indicators")
    got: list[int] = []
    offset = 0
    while True:
        body = client.post("/api/indicators/query", params={"limit": 40, "offset": offset, "sort": "updated_at,id"}, json=query)
        got += [int(i["id"]) for i in body["data"]]
        if offset == 0:
            tq.update_indicator(got[0], description="changed while paging")
        offset += len(body["data"])
        if offset >= body["total"]:
            break
    assert set(before) - set(got) == {before[40]}


@pytest.mark.integration
def test_a_server_that_ignores_the_sort_still_gives_every_item_in_order(tq, make_client) -> None:
    client = make_client()
    original = client.post

    def unsorting(path, **kwargs):
        params = dict(kwargs.get("params") or {})
        params["sort"] = "-id"  # what a server that ignores our sort might serve
        return original(path, **{**kwargs, "params": params})

    client.post = unsorting  # type: ignore[method-assign]
    items = _pull(client, tq, "All Indicators", page_size=50)
    assert sorted(int(i["id"]) for i in items) == sorted(tq.collection_ids("All Indicators"))
    assert _positions(items) == sorted(_positions(items))
