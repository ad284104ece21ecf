"""Finding Data Collections (by exact name, paged lists, private collections) and the catalogues, against the emulator."""

from __future__ import annotations

import pytest

from exportkit.errors import SourceError
from exportkit.threatq.collections import find_collection, list_collections, load_catalogues
from exportkit.threatq.emulator import ThreatQEmulator


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




@pytest.mark.integration
def test_unknown_collection_says_collections_are_private_unless_shared(make_client) -> None:
    with pytest.raises(SourceError) as info:
        find_collection(make_client(), "Team Export", user="analyst@example.com")
    message = str(info.value)
    assert "that analyst@example.com can see" in message
    assert "private to the user who saved it unless it is shared" in message


@pytest.mark.integration
@pytest.mark.parametrize("extra", [250, 196])  # more than a page; exactly a page with the four built in
def test_collection_list_ends_when_the_server_ignores_paging(tq, make_client, extra: int) -> None:
    tq.configure(search_paging=False)  # limit and offset ignored, no total: everything, every time
    for n in range(extra):
        tq.add_collection(f"Extra {n:03d}", {"criteria": {}, "filters": {"type_name": "MD5"}})
    client = make_client()
    original, calls = client.get, []

    def counting(path, **kwargs):
        calls.append(kwargs.get("params"))
        if len(calls) > 20:  # the old loop asked for ever; fail instead of hanging
            raise AssertionError("list_collections does not stop")
        return original(path, **kwargs)

    client.get = counting  # type: ignore[method-assign]
    found = list_collections(client)
    assert len(found) == extra + 4 == len({c["id"] for c in found})
    assert len(calls) <= 2
