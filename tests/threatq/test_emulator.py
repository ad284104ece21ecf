"""The ThreatQ emulator itself: token shapes, catalogues, data set, filter grammar, shapes, cursor, control API, command."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner

from exportkit.threatq.vocabulary import THREATQ_TYPES
from exportkit.threatq.commands import emulate_threatq
from exportkit.threatq.emulator import ThreatQEmulator
from exportkit.threatq.emulator.data import generate
from exportkit.threatq.emulator.store import CHANGEABLE_FIELDS
from exportkit.threatq.emulator.filters import FilterError, compile_filter, split_updated_window

NOW = lambda: datetime(2025, 1, 1, tzinfo=timezone.utc)  # noqa: E731


# -- pure parts ----------------------------------------------------------------------------

def test_generated_data_is_seeded_and_covers_every_type_and_status() -> None:
    base = datetime(2025, 1, 1, tzinfo=timezone.utc)
    a, b = generate(400, 9, base=base), generate(400, 9, base=base)
    assert a == b
    assert a != generate(400, 10, base=base)
    assert len({r["type_id"] for r in a}) == 34
    assert len({r["status_id"] for r in a}) == 5
    assert max(r["updated_at"] for r in a) <= "2025-01-01 00:00:00"


def test_generated_data_has_the_tricky_cases() -> None:
    base = datetime(2025, 1, 1, tzinfo=timezone.utc)
    data = generate(6000, 3, base=base)
    values = [r["value"] for r in data]
    assert any(v != v.strip() and v.strip() for v in values)  # surrounding white space
    assert any(not v.strip() for v in values)  # empty
    assert any(len(v) > 2048 for v in values)  # overlong
    assert any(v.startswith("bücher") for v in values)  # IDN
    assert any(v.startswith("2001:DB8:") for v in values)  # non-canonical IPv6
    assert any(v.startswith("999.") for v in values)  # invalid for its type
    assert any(len(v) == 64 and v.isupper() for v in values)  # upper-case hash
    assert any(r["expires_at"] and r["expires_at"] < "2025-01-01" for r in data)
    assert any(r["expires_at"] and r["expires_at"] > "2025-01-01" for r in data)
    assert any(r["manual_score"] is not None for r in data) and any(r["plain_score"] for r in data)
    assert any("<" in (r["description"] or "") for r in data)
    # Feed imports: more than a page of indicators share one second.
    assert Counter(r["updated_at"] for r in data).most_common(1)[0][1] > 500


def test_filter_grammar() -> None:
    types, statuses = {101: "IP Address", 102: "FQDN"}, {201: "Active", 204: "Review"}
    rec = {"id": 5, "value": "1.2.3.4", "type_id": 101, "status_id": 204, "class": "network",
           "manual_score": None, "generated_score": 7.5, "updated_at": "2024-06-01 00:00:00"}

    def match(expr) -> bool:
        return compile_filter(expr, types=types, statuses=statuses, now=NOW)(rec)

    assert match({"type_name": "ip address", "status_name": "Review"})
    assert not match({"+and": [{"type_name": "IP Address"}, {"status_name": "Active"}]})
    assert match({"+or": [{"type_name": "FQDN"}, {"value": {"is": "1.2.3.4"}}]})
    assert match({"score": {"+gte": 7, "+lte": 8}}) and not match({"score": {"+gte": 8}})
    assert match({"updated_at": {"+gt": "2024-05-31 23:59:59", "+lt": "NOW"}})
    assert not match({"updated_at": {"+gt": "2024-06-01 00:00:00"}})
    assert match({"status_name": ["Active", "Review"]}) and match({"id": {"+in": [4, 5]}})
    for bad in ({"colour": "red"}, {"score": {"+near": 3}}, {"+and": {}}, {"updated_at": {"+gt": "soon"}}):
        with pytest.raises(FilterError):
            match(bad)


def test_window_is_split_from_the_top_level_conjunction() -> None:
    expr = {"+and": [{"status_name": "Active"}, {"+and": [{"updated_at": {"+gt": "2024-01-01 00:00:00", "+lt": "2024-02-01"}}]}]}
    rest, window, _ = split_updated_window(expr, NOW)
    assert rest == {"+and": [{"status_name": "Active"}]}
    assert (window.lo, window.lo_inclusive, window.hi, window.hi_inclusive) == ("2024-01-01 00:00:00", False, "2024-02-01 00:00:00", False)
    # Inside +or a date is not a window: it stays in the residual expression.
    rest, window, _ = split_updated_window({"+or": [{"updated_at": {"+gt": "2024-01-01"}}]}, NOW)
    assert window.lo is None and rest


# -- over HTTP -----------------------------------------------------------------------------

def token(tq: ThreatQEmulator) -> dict[str, str]:
    c = tq.credentials
    r = requests.post(f"{tq.url}/api/token", params={"grant_type": "password", "client_id": c.client_id},
                      json={"email": c.username, "password": c.password}, timeout=5)
    assert r.status_code == 200
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


@pytest.mark.integration
def test_token_request_shapes_and_grants(tq) -> None:
    c, url = tq.credentials, f"{tq.url}/api/token"
    shapes = [
        requests.post(url, params={"grant_type": "password", "client_id": c.client_id}, json={"email": c.username, "password": c.password}, timeout=5),
        requests.post(url, json={"grant_type": "password", "client_id": c.client_id, "email": c.username, "password": c.password}, timeout=5),
        requests.post(url, data={"grant_type": "password", "client_id": c.client_id, "email": c.username, "password": c.password}, timeout=5),
        requests.post(url, params={"grant_type": "client_credentials"}, auth=(c.client_id, c.client_secret), timeout=5),
        requests.post(url, data={"grant_type": "client_credentials", "client_id": c.client_id, "client_secret": c.client_secret}, timeout=5),
    ]
    assert [r.status_code for r in shapes] == [200] * 5
    body = shapes[0].json()
    assert set(body) == {"access_token", "token_type", "expires_in", "refresh_token"} and body["token_type"] == "Bearer"
    refreshed = requests.post(url, params={"grant_type": "refresh_token", "refresh_token": body["refresh_token"]}, timeout=5)
    assert refreshed.status_code == 200 and refreshed.json()["access_token"] != body["access_token"]
    again = requests.post(url, params={"grant_type": "refresh_token", "refresh_token": body["refresh_token"]}, timeout=5)
    assert again.status_code == 400  # a refresh token is good once
    bad = requests.post(url, json={"grant_type": "password", "client_id": c.client_id, "email": c.username, "password": "x"}, timeout=5)
    assert bad.status_code == 400 and bad.json()["errors"]


@pytest.mark.integration
def test_api_needs_a_live_bearer_token(tq) -> None:
    assert requests.get(f"{tq.url}/api/indicator/types", timeout=5).status_code == 401
    headers = token(tq)
    assert requests.get(f"{tq.url}/api/indicator/types", headers=headers, timeout=5).status_code == 200
    tq.expire_tokens()
    assert requests.get(f"{tq.url}/api/indicator/types", headers=headers, timeout=5).status_code == 401
    headers = token(tq)
    tq.revoke_tokens()
    assert requests.get(f"{tq.url}/api/indicator/types", headers=headers, timeout=5).status_code == 401


@pytest.mark.integration
def test_catalogues_use_non_default_ids(tq) -> None:
    h = token(tq)
    types = requests.get(f"{tq.url}/api/indicator/types", headers=h, timeout=5).json()["data"]
    statuses = requests.get(f"{tq.url}/api/indicator/statuses", headers=h, timeout=5).json()["data"]
    assert {t["name"] for t in types} == set(THREATQ_TYPES)
    assert min(t["id"] for t in types) == 101 and min(s["id"] for s in statuses) == 201
    assert requests.get(f"{tq.url}/api/indicator/statuses/204", headers=h, timeout=5).json()["data"]["name"] == "Review"
    objects = requests.get(f"{tq.url}/api/objects", headers=h, timeout=5).json()["data"][0]
    assert len(objects["types"]) == 34 and len(objects["statuses"]) == 5


def query(tq, body, headers, **params):
    r = requests.post(f"{tq.url}/api/indicators/query", params=params, json=body, headers=headers, timeout=5)
    return r


@pytest.mark.integration
def test_indicators_query_sort_limit_offset_and_with(tq) -> None:
    h = token(tq)
    asc = query(tq, {"criteria": {}, "filters": {}}, h, limit=1000, sort="updated_at").json()
    assert asc["total"] == 300 and (asc["limit"], asc["offset"]) == (1000, 0)
    stamps = [(i["updated_at"], i["id"]) for i in asc["data"]]
    assert stamps == sorted(stamps)
    desc = query(tq, {}, h, limit=10, offset=5, sort="-updated_at").json()["data"]
    assert [i["id"] for i in desc] == [i["id"] for i in reversed(asc["data"])][5:15]
    by_score = query(tq, {}, h, limit=300, sort="-score").json()["data"]
    assert [i["score"] for i in by_score] == sorted((i["score"] for i in by_score), reverse=True)
    plain = asc["data"][0]
    assert "type" not in plain and "sources" not in plain and isinstance(plain["score"], (int, float))
    full = query(tq, {}, h, limit=300, **{"with": "attributes,sources,score,type,status,tags"}).json()["data"]
    assert all({"attributes", "sources", "type", "status", "tags"} <= set(i) for i in full)
    assert any(isinstance(i["score"], dict) for i in full)
    assert isinstance(full[0]["type"], dict) and full[0]["type"]["id"] >= 101


@pytest.mark.integration
def test_indicators_query_filters(tq) -> None:
    h = token(tq)
    high = query(tq, {"filters": {"score": {"+gte": 7}}}, h, limit=1000).json()
    assert high["total"] == len(tq.collection_ids("High Score")) > 0
    ctr = query(tq, {"criteria": {}, "filters": {"+and": [{"+or": [{"status_name": "Active"}]}, {"type_name": "IP Address"}]}}, h,
                limit=1000, **{"with": "type,status"}).json()["data"]
    assert ctr and all(i["type"]["name"] == "IP Address" and i["status"]["name"] == "Active" for i in ctr)
    one = ctr[0]
    assert [i["id"] for i in query(tq, {"filters": {"value": {"is": one["value"]}}}, h).json()["data"]] == [one["id"]]
    windowed = query(tq, {"filters": {"updated_at": {"+gt": one["updated_at"], "+lt": "NOW"}}}, h, limit=1000).json()["data"]
    assert all(i["updated_at"] > one["updated_at"] for i in windowed)
    for key in ("created_at", "touched_at"):
        assert query(tq, {"filters": {key: {"+lt": "NOW"}}}, h).json()["total"] == 300
    bad = query(tq, {"filters": {"colour": "red"}}, h)
    assert bad.status_code == 400 and "colour" in bad.json()["errors"][0]


@pytest.mark.integration
def test_fields_mode_shapes(tq) -> None:
    h = token(tq)
    data = query(tq, {"fields": ["id", "value", "type", "status", "score", "tags"]}, h, limit=300).json()["data"]
    assert set(data[0]) == {"id", "value", "type", "status", "score", "tags"}
    assert all(isinstance(i["type"], str) and isinstance(i["status"], str) and isinstance(i["score"], (int, float)) for i in data)
    assert any(i["tags"] for i in data) and all(isinstance(t, str) for i in data for t in i["tags"])


@pytest.mark.integration
def test_hash_endpoint_cursor_paging(tq) -> None:
    h = token(tq)
    entry = next(e for e in tq.search_entries() if e["name"] == "All Indicators")
    got, mark, last = [], "*", None
    for _ in range(50):
        body = requests.get(f"{tq.url}/api/indicators/query/hash/{entry['hash']}", params={"limit": 70, "cursorMark": mark},
                            headers=h, timeout=5).json()
        if not body["data"]:
            last = body["data"]
            break
        got += [i["id"] for i in body["data"]]
        mark = body["nextCursorMark"]
    assert got == tq.collection_ids("All Indicators", by="updated_at")
    assert last in ([], {})
    by_id = requests.get(f"{tq.url}/api/indicators/query/hash/{entry['id']}", headers=h, timeout=5)
    assert by_id.status_code == 200 and by_id.json()["total"] == 300


@pytest.mark.integration
def test_indicators_by_id_and_list(tq) -> None:
    h = token(tq)
    ident = tq.collection_ids("All Indicators")[0]
    one = requests.get(f"{tq.url}/api/indicators/{ident}", params={"with": "sources,attributes"}, headers=h, timeout=5).json()["data"]
    assert one["id"] == ident and "sources" in one
    assert requests.get(f"{tq.url}/api/indicators/1", headers=h, timeout=5).status_code == 404
    listed = requests.get(f"{tq.url}/api/indicators", params={"value": one["value"]}, headers=h, timeout=5).json()
    assert ident in [i["id"] for i in listed["data"]]


@pytest.mark.integration
def test_search_query_get_and_post(tq) -> None:
    h = token(tq)
    created = requests.post(f"{tq.url}/api/search/query", json={"name": "Mine", "json": {"api_query": {"criteria": {}, "filters": {"type_name": "MD5"}}}},
                            headers=h, timeout=5)
    assert created.status_code == 201
    listing = requests.get(f"{tq.url}/api/search/query", headers=h, timeout=5).json()
    assert listing["total"] == 5 and "Mine" in [e["name"] for e in listing["data"]]
    assert {type(e["json"]) for e in listing["data"]} == {str, dict}  # "mixed": both shapes served
    paged = requests.get(f"{tq.url}/api/search/query", params={"limit": 2, "offset": 4}, headers=h, timeout=5).json()
    assert [e["name"] for e in paged["data"]] == ["Mine"]


@pytest.mark.integration
def test_control_api_over_http(tq) -> None:
    h, ctl = token(tq), f"{tq.url}/_control"
    control = requests.Session()  # the control routes need the emulator's token
    control.headers.update(tq.control_headers)
    added = control.post(f"{ctl}/indicators", json={"value": "evil.example", "type_name": "FQDN"}, timeout=5).json()["data"]
    assert tq.indicator(added["id"])["value"] == "evil.example"
    before = tq.indicator(added["id"])["updated_at"]
    r = control.post(f"{ctl}/indicators/{added['id']}", json={"status_name": "Whitelisted", "updated_at": "2040-01-01 00:00:00"}, timeout=5)
    assert r.status_code == 200 and tq.indicator(added["id"])["updated_at"] == "2040-01-01 00:00:00" != before
    assert control.post(f"{ctl}/indicators/{added['id']}", json={"colour": "red"}, timeout=5).status_code == 400
    assert control.delete(f"{ctl}/indicators/{added['id']}", timeout=5).status_code == 200
    assert tq.indicator(added["id"]) is None
    control.post(f"{ctl}/faults", json={"status": 503, "path_prefix": "/api/indicator/types"}, timeout=5)
    assert requests.get(f"{tq.url}/api/indicator/types", headers=h, timeout=5).status_code == 503
    control.post(f"{ctl}/faults", json={"errors": "boom"}, timeout=5)
    r = requests.get(f"{tq.url}/api/indicator/types", headers=h, timeout=5)
    assert r.status_code == 200 and r.json()["errors"] == ["boom"]
    control.post(f"{ctl}/faults", json={"after": 2, "status": 500, "path_prefix": "/api/indicator/statuses"}, timeout=5)
    codes = [requests.get(f"{tq.url}/api/indicator/statuses", headers=h, timeout=5).status_code for _ in range(3)]
    assert codes == [200, 500, 200]
    control.post(f"{ctl}/tokens/lifetime", json={"seconds": 5}, timeout=5)
    assert requests.post(f"{tq.url}/api/token", params={"grant_type": "client_credentials"},
                         auth=(tq.credentials.client_id, tq.credentials.client_secret), timeout=5).json()["expires_in"] == 5
    control.post(f"{ctl}/tokens/expire", timeout=5)
    assert requests.get(f"{tq.url}/api/indicator/types", headers=h, timeout=5).status_code == 401
    ids = control.get(f"{ctl}/collections/CTR%20Export/ids", timeout=5).json()["data"]
    assert ids == tq.collection_ids("CTR Export")
    assert control.get(f"{ctl}/stats", timeout=5).json()["data"]["indicators"] == 300


@pytest.mark.integration
def test_control_api_names_the_fields_that_can_change(tq) -> None:
    ident = tq.collection_ids("CTR Export")[0]
    before = tq.indicator(ident)
    r = requests.post(f"{tq.url}/_control/indicators/{ident}", json={"score": 9.5, "description": "x"}, headers=tq.control_headers, timeout=5)
    assert r.status_code == 400
    (error,) = r.json()["errors"]
    assert "cannot change 'score'" in error and "did you mean 'manual_score'" in error
    for field in CHANGEABLE_FIELDS:
        assert field in error
    assert tq.indicator(ident) == before  # nothing half-changed
    r = requests.post(f"{tq.url}/_control/indicators/{ident}", json={"manual_score": 9.5}, headers=tq.control_headers, timeout=5)
    assert r.status_code == 200 and tq.indicator(ident)["manual_score"] == 9.5


def test_emulators_doc_lists_the_fields_that_can_change() -> None:
    text = (Path(__file__).parents[2] / "docs" / "emulators.md").read_text(encoding="utf-8")
    (line,) = [ln for ln in text.splitlines() if ln.startswith("Fields an indicator change accepts:")]
    assert re.findall(r"`([a-z_]+)`", line) == list(CHANGEABLE_FIELDS)


@pytest.mark.integration
def test_changes_bump_updated_at_and_keep_the_index_sorted(tq) -> None:
    first = tq.collection_ids("All Indicators")[0]
    tq.update_indicator(first, manual_score=10)
    assert tq.collection_ids("All Indicators")[-1] == first
    assert tq.indicator(first)["updated_at"] >= datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:00")[:16]
    assert first in tq.collection_ids("High Score")


def test_command_options_parse() -> None:
    result = CliRunner().invoke(emulate_threatq, ["--help"])
    assert result.exit_code == 0
    for option in ("--port", "--indicators", "--seed", "--username", "--password", "--client-id", "--token-lifetime",
                   "--lenient", "--page-cap", "--timezone", "--clock-offset", "--sources-without-tlp", "--search-ignores-paging"):
        assert option in result.output
    assert CliRunner().invoke(emulate_threatq, ["--indicators", "-1"]).exit_code == 2


@pytest.mark.integration
def test_command_prints_the_url_first_and_serves() -> None:
    code = ("import sys; from exportkit.threatq.commands import emulate_threatq; "
            "emulate_threatq(['--indicators', '20', '--username', 'x@example.com', '--password', 'pw-1234'], standalone_mode=True)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        r = requests.post(f"{url}/api/token", params={"grant_type": "password", "client_id": "exportkit-emulator"},
                          json={"email": "x@example.com", "password": "pw-1234"}, timeout=5)
        assert r.status_code == 200
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.mark.integration
def test_latency_setting_delays_every_answer_and_survives_clearing_faults() -> None:
    with ThreatQEmulator(indicators=5, latency=0.15) as tq:
        started = time.perf_counter()
        assert requests.get(f"{tq.url}/_control/stats", headers=tq.control_headers, timeout=5).status_code == 200
        assert time.perf_counter() - started >= 0.15
        requests.delete(f"{tq.url}/_control/faults", headers=tq.control_headers, timeout=5)  # clears planned faults, not the WAN
        started = time.perf_counter()
        requests.get(f"{tq.url}/api/objects", timeout=5)
        assert time.perf_counter() - started >= 0.15
    assert "--latency" in CliRunner().invoke(emulate_threatq, ["--help"]).output
    assert CliRunner().invoke(emulate_threatq, ["--latency", "-1"]).exit_code == 2


# -- switchable behaviours of the real service -------------------------------------------------

@pytest.mark.integration
def test_page_cap_serves_fewer_and_echoes_the_capped_limit(tq) -> None:
    h = token(tq)
    assert query(tq, {}, h, limit=100).json()["limit"] == 100
    tq.configure(page_cap=40)
    body = query(tq, {}, h, limit=100, offset=10).json()
    assert (body["limit"], len(body["data"]), body["total"], body["offset"]) == (40, 40, 300, 10)


@pytest.mark.integration
def test_fields_required_leaves_attributes_and_sources_out_of_with(tq) -> None:
    h = token(tq)
    blocks = {"with": "attributes,sources,tags"}
    assert all("sources" in i for i in query(tq, {}, h, limit=50, **blocks).json()["data"])
    tq.configure(fields_required=True)
    legacy = query(tq, {}, h, limit=50, **blocks).json()["data"]
    assert not any("sources" in i or "attributes" in i for i in legacy) and all("tags" in i for i in legacy)
    asked = query(tq, {"fields": ["*", "attributes", "sources", "tags"]}, h, limit=50).json()["data"]
    assert all({"sources", "attributes", "tags", "touched_at", "type_id"} <= set(i) for i in asked)
    assert all(isinstance(t, str) for i in asked for t in i["tags"])


@pytest.mark.integration
def test_child_row_changes_move_touched_at_only_when_switched_on(tq) -> None:
    first, second = tq.collection_ids("All Indicators")[:2]
    before = tq.indicator(first)
    tq.set_source_tlp(first, 13, "red")  # lenient default: both times move
    assert tq.indicator(first)["updated_at"] != before["updated_at"]
    tq.configure(touch_only_children=True)
    before = tq.indicator(second)
    tq.update_indicator(second, sources=[13], updated_at="2031-01-01 00:00:00")
    tq.update_indicator(second, attributes=[("Port", "22")], updated_at="2031-01-01 00:00:05")
    after = tq.indicator(second)
    assert after["updated_at"] == before["updated_at"] and after["touched_at"] == "2031-01-01 00:00:05"
    assert tq.collection_ids("All Indicators")[-1] == second  # the touched_at index moved
    assert tq.collection_ids("All Indicators", by="updated_at")[-1] != second
    tq.update_indicator(second, manual_score=9, updated_at="2031-01-01 00:00:09")  # the indicator itself: both move
    assert tq.indicator(second)["updated_at"] == tq.indicator(second)["touched_at"] == "2031-01-01 00:00:09"


@pytest.mark.integration
def test_source_tlp_per_indicator_and_sources_without_tlp(tq) -> None:
    h = token(tq)
    ident = tq.collection_ids("All Indicators")[0]
    tq.update_indicator(ident, sources=[11, 13])
    tq.set_source_tlp(ident, 13, "red")

    def sources() -> list[dict]:
        body = query(tq, {"filters": {"id": ident}, "fields": ["*", "sources"]}, h).json()
        return body["data"][0]["sources"]

    assert [(s["source_id"], s.get("tlp_id"), s.get("tlp_name")) for s in sources()] == [(11, 3, "GREEN"), (13, 1, "RED")]
    tq.configure(sources_without_tlp=True)
    assert all("tlp_id" not in s and "tlp_name" not in s for s in sources())


@pytest.mark.integration
def test_non_utc_appliance_serves_and_filters_local_times(tq) -> None:
    h = token(tq)
    ident = tq.collection_ids("All Indicators")[0]
    tq.update_indicator(ident, updated_at="2030-06-01 12:00:00")
    tq.configure(timezone="America/New_York")  # UTC-4 in June
    served = query(tq, {"filters": {"id": ident}}, h).json()["data"][0]
    assert served["updated_at"] == served["touched_at"] == "2030-06-01 08:00:00"
    window = {"touched_at": {"+gt": "2030-06-01 07:59:59", "+lt": "2030-06-01 08:00:01"}}
    assert [i["id"] for i in query(tq, {"filters": window}, h, sort="touched_at").json()["data"]] == [ident]
    assert tq.indicator(ident)["updated_at"] == "2030-06-01 12:00:00"  # kept in UTC inside


@pytest.mark.integration
def test_clock_offset_stamps_changes_and_the_date_header(tq) -> None:
    from email.utils import parsedate_to_datetime

    tq.configure(clock_offset=-180)
    r = requests.get(f"{tq.url}/api/indicator/types", headers=token(tq), timeout=5)
    told = parsedate_to_datetime(r.headers["Date"])
    assert abs((told - datetime.now(timezone.utc)).total_seconds() + 180) < 3
    ident = tq.collection_ids("All Indicators")[0]
    tq.update_indicator(ident, description="later, by the appliance's clock")
    stamped = datetime.strptime(tq.indicator(ident)["updated_at"], "%Y-%m-%d %H:%M:%S").replace(tzinfo=timezone.utc)
    assert abs((stamped - datetime.now(timezone.utc)).total_seconds() + 180) < 3


@pytest.mark.integration
def test_search_list_that_ignores_paging(tq) -> None:
    h = token(tq)
    tq.configure(search_paging=False)
    body = requests.get(f"{tq.url}/api/search/query", params={"limit": 1, "offset": 2}, headers=h, timeout=5).json()
    assert len(body["data"]) == 4 and "total" not in body


@pytest.mark.integration
def test_behaviour_over_the_control_api(tq) -> None:
    ctl, h = f"{tq.url}/_control/behaviour", tq.control_headers
    assert requests.post(ctl, json={"page_cap": 1}, timeout=5).status_code == 403, "the control routes need the token"
    r = requests.post(ctl, json={"page_cap": 300, "fields_required": True, "clock_offset": 120}, headers=h, timeout=5)
    assert r.status_code == 200 and r.json()["data"]["page_cap"] == 300
    assert requests.get(ctl, headers=h, timeout=5).json()["data"]["clock_offset"] == 120
    for bad in ({"page_kap": 1}, {"page_cap": -1}, {"timezone": "Mars/Olympus"}, {"fields_required": "yes"}):
        assert requests.post(ctl, json=bad, headers=h, timeout=5).status_code == 400, bad


@pytest.mark.integration
def test_realistic_preset() -> None:
    with ThreatQEmulator(indicators=5, realistic=True) as tq:
        assert (tq.behaviour.page_cap, tq.behaviour.fields_required, tq.behaviour.touch_only_children) == (300, True, True)
    with ThreatQEmulator(indicators=5, realistic=True, page_cap=None) as tq:
        assert tq.behaviour.page_cap is None
