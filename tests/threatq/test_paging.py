"""Running a collection's query and paging safely (keyset paging, page caps, fields, time zones), against the emulator."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from exportkit.errors import SourceError
from exportkit.records import parse_time
from exportkit.threatq.collections import find_collection
from exportkit.threatq.paging import DEFAULT_FIELDS, iter_indicators, last_page, with_window
from exportkit.threatq.times import format_tq_time


def test_with_window_ands_the_window_with_the_saved_filters() -> None:
    saved = {"criteria": {"status_name": "Active"}, "filters": {"score": {"+gte": 7}}}
    query = with_window(saved, gt="2024-01-01 00:00:00", lt="2024-02-01 00:00:00")
    assert query["criteria"] == {"status_name": "Active"}
    assert query["filters"] == {"+and": [{"score": {"+gte": 7}}, {"touched_at": {"+gt": "2024-01-01 00:00:00", "+lt": "2024-02-01 00:00:00"}}]}
    assert saved["filters"] == {"score": {"+gte": 7}}  # the saved query is not changed
    assert with_window({"criteria": {}, "filters": {}}, lt="x", field="updated_at")["filters"] == {"+and": [{"updated_at": {"+lt": "x"}}]}
    assert with_window(saved) == saved


def test_format_tq_time_is_utc_seconds() -> None:
    aware = datetime(2024, 5, 6, 9, 8, 7, 654321, tzinfo=timezone(timedelta(hours=2)))
    assert format_tq_time(aware) == "2024-05-06 07:08:07"


def _pull(client, tq, name="All Indicators", **kwargs):
    return list(iter_indicators(client, find_collection(client, name).api_query, **kwargs))


def _positions(items):
    return [(parse_time(i["touched_at"]), int(i["id"])) for i in items]


@pytest.mark.integration
@pytest.mark.parametrize("name", ["CTR Export", "High Score", "All Indicators", "Active IPs"])
def test_full_pull_matches_the_collection_in_order(tq, make_client, name: str) -> None:
    items = _pull(make_client(), tq, name, page_size=37)
    assert [int(i["id"]) for i in items] == tq.collection_ids(name)
    assert _positions(items) == sorted(_positions(items))
    assert items and all({"attributes", "sources", "score", "type_id", "status_id", "tags", "touched_at"} <= set(i) for i in items)


@pytest.mark.integration
def test_query_asks_for_blocks_with_fields_sorted_by_touched_at(tq, make_client) -> None:
    seen = []
    client = make_client()
    original = client.post

    def spy(path, **kwargs):
        seen.append(kwargs)
        return original(path, **kwargs)

    client.post = spy  # type: ignore[method-assign]
    _pull(client, tq, page_size=100)
    assert seen[0]["json"]["fields"] == list(DEFAULT_FIELDS) == ["*", "attributes", "sources", "tags"]
    assert "with" not in seen[0]["params"]  # with= only where a server needs it
    assert seen[0]["params"]["sort"] == "touched_at"
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
    since = parse_time(tq.indicator(tq.collection_ids("All Indicators")[100])["touched_at"])
    until = datetime.now(timezone.utc)  # the engine passes the run start
    first: list[int] = []
    changed = None
    for item in iter_indicators(client, query, since=since, until=until, page_size=25):
        first.append(int(item["id"]))
        if len(first) == 30:
            changed = first[3]
            tq.update_indicator(changed, status_name="Whitelisted")
    expected = [i for i in tq.collection_ids("All Indicators") if i != changed]
    expected = [i for i in expected if parse_time(tq.indicator(i)["touched_at"]) >= since]
    assert [i for i in first if i != changed] == expected
    second = [int(i["id"]) for i in iter_indicators(client, query, since=since, until=None, page_size=25)]
    assert changed in second
    assert second[-1] == changed  # it moved to the end: newest updated_at


@pytest.mark.integration
def test_historical_window_is_exact(tq, make_client) -> None:
    ids = tq.collection_ids("All Indicators")
    since_s, until_s = tq.indicator(ids[50])["touched_at"], tq.indicator(ids[200])["touched_at"]
    since, until = parse_time(since_s), parse_time(until_s)
    items = _pull(make_client(), tq, since=since, until=until, page_size=30)
    assert [int(i["id"]) for i in items] == tq.collection_ids("All Indicators", since=since_s, until=until_s)
    assert all(since <= parse_time(i["touched_at"]) < until for i in items)


@pytest.mark.integration
def test_sub_second_bounds_are_respected(tq, make_client) -> None:
    tq.touch([tq.collection_ids("All Indicators")[0]], at="2031-01-01 00:00:00")
    tq.touch([tq.collection_ids("All Indicators")[0]], at="2031-01-01 00:00:01")
    edge = datetime(2031, 1, 1, 0, 0, 0, 500000, tzinfo=timezone.utc)
    after = _pull(make_client(), tq, since=edge, page_size=10)
    before = _pull(make_client(), tq, since=edge - timedelta(seconds=10), until=edge, page_size=10)
    assert [i["touched_at"] for i in after] == ["2031-01-01 00:00:01"]
    assert [i["touched_at"] for i in before] == ["2031-01-01 00:00:00"]


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
    items = _pull(make_client(), tq, page_size=100, fields=["id"])
    assert set(items[0]) == {"id", "touched_at"}
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
        body = client.post("/api/indicators/query", params={"limit": 40, "offset": offset, "sort": "touched_at,id"}, json=query)
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


def test_last_page_rules() -> None:
    assert last_page([], {"total": 900}, 0, 500)  # an empty page ends it
    assert not last_page([{}] * 300, {"total": 900, "limit": 300}, 0, 500)  # capped: 300 of 900
    assert last_page([{}] * 300, {"total": 900}, 600, 500)  # total reached
    assert not last_page([{}] * 300, {"limit": 300}, 0, 500)  # no total: a full page of the echoed limit
    assert last_page([{}] * 299, {"limit": 300}, 0, 500)
    assert last_page([{}] * 10, {}, 0, 500) and not last_page([{}] * 500, {}, 0, 500)


@pytest.mark.integration
@pytest.mark.parametrize("name", ["All Indicators", "CTR Export"])
def test_a_silent_page_cap_does_not_end_paging(tq, make_client, name: str) -> None:
    tq.configure(page_cap=30)  # the server serves 30 whatever we ask, and echoes limit 30
    client = make_client()
    answers = []
    original = client.post

    def spy(path, **kwargs):
        body = original(path, **kwargs)
        answers.append((kwargs["params"]["limit"], body["limit"], len(body["data"])))
        return body

    client.post = spy  # type: ignore[method-assign]
    items = _pull(client, tq, name, page_size=100)
    assert [int(i["id"]) for i in items] == tq.collection_ids(name)
    assert answers[0] == (100, 30, 30)


@pytest.mark.integration
def test_a_page_cap_with_a_bounded_window_and_one_shared_timestamp(tq, make_client) -> None:
    tq.configure(page_cap=25)
    ids = tq.collection_ids("All Indicators")[:120]
    tq.touch(ids, at="2030-01-01 00:00:00")  # more than a page of one second: offset paging within it
    items = _pull(make_client(), tq, page_size=40, since=datetime(2029, 1, 1, tzinfo=timezone.utc),
                  until=datetime(2031, 1, 1, tzinfo=timezone.utc))
    assert [int(i["id"]) for i in items] == sorted(ids)


@pytest.mark.integration
def test_fields_bring_attributes_and_sources_from_a_server_that_needs_them(tq, make_client) -> None:
    tq.configure(fields_required=True)
    client = make_client()
    items = _pull(client, tq, page_size=100)
    assert all("sources" in i and "attributes" in i and "tags" in i for i in items)
    assert any(i["sources"] for i in items) and any(i["attributes"] for i in items)
    # What with= alone gets from such a server: no sources, so no TLP.
    legacy = _pull(client, tq, page_size=100, fields=None, with_="attributes,sources,tags")
    assert legacy and not any("sources" in i or "attributes" in i for i in legacy)


@pytest.mark.integration
def test_a_page_without_sources_fails_loudly(tq, make_client) -> None:
    tq.configure(fields_required=True)
    with pytest.raises(SourceError, match=r"without their 'sources'.*TLP of these indicators is unknown"):
        _pull(make_client(), tq, page_size=100, fields=None, with_="attributes,sources", require=("sources",))


@pytest.mark.integration
def test_touched_at_window_sees_child_row_changes_updated_at_does_not(tq, make_client) -> None:
    tq.configure(touch_only_children=True)
    client = make_client()
    since = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(seconds=1)
    changed = tq.collection_ids("All Indicators")[3]
    tq.update_indicator(changed, sources=[14], updated_at=format_tq_time(since))  # a source added: a child row
    record = tq.indicator(changed)
    assert record["touched_at"] == format_tq_time(since) > record["updated_at"]
    touched = _pull(client, tq, since=since, page_size=50)
    assert [int(i["id"]) for i in touched] == [changed]
    assert touched[0]["sources"][0]["tlp_id"] == 1
    assert _pull(client, tq, since=since, page_size=50, time_field="updated_at") == []


@pytest.mark.integration
def test_window_bounds_in_the_appliance_time_zone(tq, make_client) -> None:
    from exportkit.threatq.times import zone

    tq.configure(timezone="Asia/Kolkata")  # UTC+05:30: served times and filter dates are local
    ids = tq.collection_ids("All Indicators")
    since_s, until_s = tq.indicator(ids[50])["touched_at"], tq.indicator(ids[200])["touched_at"]  # UTC inside
    since, until = parse_time(since_s), parse_time(until_s)
    want = tq.collection_ids("All Indicators", since=since_s, until=until_s)
    local = _pull(make_client(), tq, since=since, until=until, page_size=30, tz=zone("Asia/Kolkata"))
    assert [int(i["id"]) for i in local] == want
    assert local[0]["touched_at"] == (since + timedelta(hours=5, minutes=30)).strftime("%Y-%m-%d %H:%M:%S")
    as_utc = _pull(make_client(), tq, since=since, until=until, page_size=30)  # the old assumption
    assert [int(i["id"]) for i in as_utc] != want
