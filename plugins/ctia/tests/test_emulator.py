"""The CTIA emulator: CTIA's answers and error shapes, its knobs, and the inspection API."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pytest
import requests
from click.testing import CliRunner

from exportkit_ctia.emulator import CtiaEmulator
from exportkit_ctia.emulator.cli import emulate_ctia

pytestmark = pytest.mark.integration


def judgement(**extra):
    body = {"observable": {"type": "ip", "value": "192.0.2.1"}, "source": "s", "priority": 90, "confidence": "High",
            "severity": "High", "tlp": "amber"}
    body.update(extra)
    return body


@pytest.fixture
def api(ctia):
    token = requests.post(ctia.token_url, auth=(ctia.client_id, ctia.client_secret), data={"grant_type": "client_credentials"}).json()
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token['access_token']}"
    session.base = ctia.url
    return session


def test_token_answers_like_iroh(ctia):
    answer = requests.post(ctia.token_url, auth=(ctia.client_id, ctia.client_secret), data={"grant_type": "client_credentials"})
    assert answer.json()["expires_in"] == 600 and answer.json()["token_type"] == "bearer"
    assert requests.post(ctia.token_url, auth=(ctia.client_id, "wrong"), data={"grant_type": "client_credentials"}).status_code == 401
    assert requests.get(f"{ctia.url}/ctia/judgement/search").json()["error"] == "not_authenticated"


def test_single_create_get_expire_delete(ctia, api):
    created = api.post(f"{ctia.url}/ctia/judgement", json=judgement(disposition_name="Suspicious"))
    assert created.status_code == 201 and created.headers["Location"] == created.json()["id"]
    entity = created.json()
    assert entity["id"].startswith(f"{ctia.url}/ctia/judgement/judgement-") and entity["disposition"] == 3
    assert entity["valid_time"]["end_time"] == "2525-01-01T00:00:00.000Z"
    short = entity["id"].rsplit("/", 1)[1]
    assert api.get(f"{ctia.url}/ctia/judgement/{short}").json()["id"] == entity["id"]
    expired = api.post(f"{ctia.url}/ctia/judgement/{short}/expire", params={"reason": "gone"}).json()
    assert expired["reason"] == "gone" and ctia.live_judgements() == []
    assert api.delete(f"{ctia.url}/ctia/judgement/{short}").status_code == 204
    assert api.get(f"{ctia.url}/ctia/judgement/{short}").status_code == 404
    assert api.post(f"{ctia.url}/ctia/judgement/{short}/expire").status_code == 404


def test_error_shapes(ctia, api):
    schema = api.post(f"{ctia.url}/ctia/judgement", json=judgement(title="no"))
    assert schema.status_code == 400 and "errors" in schema.json()
    mismatch = api.post(f"{ctia.url}/ctia/judgement", json=judgement(disposition=1, disposition_name="Malicious"))
    assert mismatch.status_code == 400 and mismatch.json()["error"].startswith("Mismatched disposition")
    own_id = api.post(f"{ctia.url}/ctia/judgement", json=judgement(id=f"{ctia.url}/ctia/judgement/judgement-00000000-0000-4000-8000-000000000000"))
    assert own_id.status_code == 403
    bundle = api.post(f"{ctia.url}/ctia/bundle/import", json={"type": "bundle", "source": "s", "feeds": []})
    assert bundle.status_code == 400 and "errors" in bundle.json()


def test_bundle_import_per_entity_results_and_prefixes(ctia, api):
    body = {
        "type": "bundle", "source": "s",
        "judgements": [
            judgement(id="transient:j1", external_ids=["p-j1"]),
            judgement(id="transient:j2", external_ids=["p-j2"], valid_time={"start_time": "2030-01-02T00:00:00Z", "end_time": "2030-01-01T00:00:00Z"}),
            judgement(id="transient:j3", tlp="white"),
        ],
        "relationships": [
            {"relationship_type": "element-of", "source_ref": "transient:j1", "target_ref": "transient:nowhere"},
        ],
    }
    results = {r["original_id"] if "original_id" in r else "rel": r for r in api.post(f"{ctia.url}/ctia/bundle/import?external-key-prefixes=p-", json=body).json()["results"]}
    assert results["transient:j1"]["result"] == "created"
    assert results["transient:j2"]["result"] == "error" and results["transient:j2"]["type"] == "judgement"
    assert "start_time" in results["transient:j2"]["msg"]
    assert results["transient:j3"]["result"] == "error" and results["transient:j3"]["error"] == "Entity Access Control validation Error"
    assert "transient ID" in [r for r in results.values() if r["type"] == "relationship"][0]["error"]
    again = api.post(f"{ctia.url}/ctia/bundle/import?external-key-prefixes=p-", json={"type": "bundle", "source": "s", "judgements": [judgement(id="transient:x", external_ids=["p-j1"])]})
    assert again.json()["results"][0]["result"] == "exists"
    other_prefix = api.post(f"{ctia.url}/ctia/bundle/import?external-key-prefixes=q-", json={"type": "bundle", "source": "s", "judgements": [judgement(external_ids=["p-j1"])]})
    assert other_prefix.json()["results"][0]["result"] == "created"


def test_bulk_keeps_request_order_and_tempids(ctia, api):
    answer = api.post(f"{ctia.url}/ctia/bulk", json={"judgements": [judgement(id="transient:a"), judgement(disposition=9)]})
    assert answer.status_code == 400  # disposition 9 is a schema violation: nothing created
    answer = api.post(f"{ctia.url}/ctia/bulk", json={"judgements": [judgement(id="transient:a"), judgement(valid_time={"end_time": "4242-01-01T00:00:00Z"})]})
    assert answer.status_code == 201
    ids = answer.json()["judgements"]
    assert ids[0] == answer.json()["tempids"]["transient:a"] and ids[1]["type"] == "spec-validation-error"


def test_size_limit_and_min_tlp_settings():
    with CtiaEmulator(max_entities=1, min_tlp="amber") as ctia:
        token = requests.post(ctia.token_url, auth=(ctia.client_id, ctia.client_secret), data={"grant_type": "client_credentials"}).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        too_big = requests.post(f"{ctia.url}/ctia/bundle/import", json={"type": "bundle", "source": "s", "judgements": [judgement(), judgement()]}, headers=headers)
        assert too_big.status_code == 400 and too_big.json() == "Bundle max nb of entities: 1"
        green = requests.post(f"{ctia.url}/ctia/judgement", json=judgement(tlp="green"), headers=headers)
        assert green.status_code == 400 and "allowed TLPs are: amber,red" in green.json()["msg"]


def test_search_and_external_id(ctia, api):
    api.post(f"{ctia.url}/ctia/judgement", json=judgement(external_ids=["x-1"], disposition=2))
    api.post(f"{ctia.url}/ctia/judgement", json=judgement(observable={"type": "domain", "value": "a.example"}, disposition=1))
    found = api.get(f"{ctia.url}/ctia/judgement/search", params={"query": "observable.type:domain", "disposition": "1"})
    assert [j["observable"]["value"] for j in found.json()] == ["a.example"] and found.headers["X-Total-Hits"] == "1"
    assert api.get(f"{ctia.url}/ctia/judgement/search/count", params={"source": "s"}).json() == 2
    assert len(api.get(f"{ctia.url}/ctia/judgement/external_id/x-1").json()) == 1


def test_search_by_external_id_prefix_with_lucene_escapes_and_paging(ctia, api):
    for n in range(5):
        api.post(f"{ctia.url}/ctia/judgement", json=judgement(external_ids=[f"ours-judgement-{n}"]))
    api.post(f"{ctia.url}/ctia/judgement", json=judgement(external_ids=["theirs-judgement-1"]))
    query = r"external_ids:ours\-judgement\-*"
    first = api.get(f"{ctia.url}/ctia/judgement/search", params={"query": query, "limit": 3})
    rest = api.get(f"{ctia.url}/ctia/judgement/search", params={"query": query, "limit": 3, "offset": 3})
    assert first.headers["X-Total-Hits"] == "5"
    found = [j["external_ids"][0] for j in first.json() + rest.json()]
    assert sorted(found) == [f"ours-judgement-{n}" for n in range(5)]
    exact = api.get(f"{ctia.url}/ctia/judgement/search", params={"query": r"external_ids:theirs\-judgement\-1"})
    assert [j["external_ids"] for j in exact.json()] == [["theirs-judgement-1"]]


def test_knobs_and_http_inspection(ctia, api):
    api.post(f"{ctia.url}/ctia/judgement", json=judgement())
    assert requests.get(f"{ctia.url}/_inspect/counts", headers=ctia.control_headers).json()["live_judgements"] == 1
    assert len(requests.get(f"{ctia.url}/_inspect/live", params={"value": "192.0.2.1"}, headers=ctia.control_headers).json()) == 1
    assert len(requests.get(f"{ctia.url}/_inspect/entities/judgement", headers=ctia.control_headers).json()) == 1
    ctia.set_request_budget(0, retry_after=120)
    limited = api.get(f"{ctia.url}/ctia/judgement/search")
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "120"
    requests.post(f"{ctia.url}/_inspect/revoke-tokens", headers=ctia.control_headers)
    ctia.set_request_budget(None)
    assert api.get(f"{ctia.url}/ctia/judgement/search").status_code == 401
    requests.post(f"{ctia.url}/_inspect/reset", headers=ctia.control_headers)
    assert ctia.counts()["judgement"] == 0
    assert ctia.live_by_observable() == {}


def test_latency_setting_survives_reset_and_stats_count_calls():
    with CtiaEmulator(latency=0.15) as ctia:
        requests.post(f"{ctia.url}/_inspect/reset", headers=ctia.control_headers)
        started = time.perf_counter()
        calls = requests.get(f"{ctia.url}/_inspect/stats", headers=ctia.control_headers).json()["calls"]
        assert time.perf_counter() - started >= 0.15
        assert calls == 1  # the reset forgot earlier calls; this one is counted
        requests.post(ctia.token_url, auth=(ctia.client_id, ctia.client_secret), data={"grant_type": "client_credentials"})
        assert requests.get(f"{ctia.url}/_inspect/stats", headers=ctia.control_headers).json()["calls"] == 3
    assert "--latency" in CliRunner().invoke(emulate_ctia, ["--help"]).output


def test_put_on_a_judgement_is_refused_as_for_any_api_client(ctia, api):
    entity = api.post(f"{ctia.url}/ctia/judgement", json=judgement()).json()
    short = entity["id"].rsplit("/", 1)[1]
    answer = api.put(f"{ctia.url}/ctia/judgement/{short}", json=judgement(priority=10))
    assert answer.status_code == 403 and answer.json()["error"] == "missing_capability"
    assert api.get(f"{ctia.url}/ctia/judgement/{short}").json()["priority"] == 90


def test_bulk_get_answers_every_id_in_order_with_null_for_unknown(ctia, api):
    first = api.post(f"{ctia.url}/ctia/judgement", json=judgement()).json()
    second = api.post(f"{ctia.url}/ctia/judgement", json=judgement(priority=50)).json()
    short = second["id"].rsplit("/", 1)[1]
    answer = api.get(f"{ctia.url}/ctia/bulk", params=[("judgements", first["id"]), ("judgements", "judgement-unknown"), ("judgements", short)])
    assert answer.status_code == 200
    found = answer.json()["judgements"]
    assert [j and j["id"] for j in found] == [first["id"], None, second["id"]]


def test_an_out_of_band_expire_ends_a_judgement_behind_the_exporters_back(ctia, api):
    kept = api.post(f"{ctia.url}/ctia/judgement", json=judgement()).json()
    gone = api.post(f"{ctia.url}/ctia/judgement", json=judgement(observable={"type": "ip", "value": "192.0.2.9"})).json()
    # In process, by id ...
    assert ctia.expire_out_of_band(gone["id"]) == 1
    assert [j["id"] for j in ctia.live_judgements()] == [kept["id"]]
    # ... and over the control API, by observable (what another tool would do).
    answer = requests.post(f"{ctia.url}/_inspect/expire", params={"type": "ip", "value": "192.0.2.1"}, headers=ctia.control_headers)
    assert answer.json() == {"expired": 1}
    assert ctia.live_judgements() == []
    assert "expired by another tool" in ctia.app.store.get("judgement", kept["id"].rsplit("/", 1)[1])["reason"]


def test_search_takes_or_groups_of_quoted_values_and_matches_list_fields(ctia, api):
    for n in range(3):
        api.post(f"{ctia.url}/ctia/judgement", json=judgement(external_ids=[f"x-{n}", "shared"]))
    found = api.get(f"{ctia.url}/ctia/judgement/search", params={"query": 'external_ids:("x-0" OR "x-2")'}).json()
    assert sorted(j["external_ids"][0] for j in found) == ["x-0", "x-2"]
    found = api.get(f"{ctia.url}/ctia/judgement/search", params={"query": 'external_ids:"shared" AND priority:90', "limit": 2})
    assert len(found.json()) == 2 and found.headers["X-Total-Hits"] == "3"
def test_expire_appends_the_reason_and_refuses_one_that_would_grow_too_long(ctia, api):
    short = api.post(f"{ctia.url}/ctia/judgement", json=judgement(reason="r" * 1000)).json()["id"].rsplit("/", 1)[1]
    first = api.post(f"{ctia.url}/ctia/judgement/{short}/expire", params={"reason": "gone"})
    assert first.status_code == 200 and first.json()["reason"] == "r" * 1000 + " gone"
    # A second expiry appends again: beyond 1024 characters CTIA's spec check refuses it.
    second = api.post(f"{ctia.url}/ctia/judgement/{short}/expire", params={"reason": "x" * 30})
    assert second.status_code == 400 and second.json()["error"] == "Spec Validation Client Error"
    assert ctia.judgements()[0]["reason"] == "r" * 1000 + " gone"


def test_the_organisation_rate_limit_answers_429_with_an_hour_long_retry_after():
    now = [datetime(2030, 1, 1, tzinfo=timezone.utc)]
    with CtiaEmulator(org_rate_limit=3, token_lifetime=7200, clock=lambda: now[0]) as ctia:
        token = requests.post(ctia.token_url, auth=(ctia.client_id, ctia.client_secret), data={"grant_type": "client_credentials"}).json()
        headers = {"Authorization": f"Bearer {token['access_token']}"}
        answers = [requests.get(f"{ctia.url}/ctia/judgement/search", headers=headers) for _ in range(3)]
        assert [a.status_code for a in answers] == [200, 200, 200]
        assert answers[0].headers["X-Ratelimit-Org-Limit"] == "3"
        now[0] += timedelta(minutes=10)
        refused = requests.get(f"{ctia.url}/ctia/judgement/search", headers=headers)
        assert refused.status_code == 429 and refused.json() == {"error": "Too Many Requests"}
        assert int(refused.headers["Retry-After"]) == 3000, "until the oldest request leaves the rolling hour"
        # The window rolls: an hour after the first requests, the budget is back.
        now[0] += timedelta(minutes=50)
        assert requests.get(f"{ctia.url}/ctia/judgement/search", headers=headers).status_code == 200


def bearer(ctia, client_id, secret):
    token = requests.post(ctia.token_url, auth=(client_id, secret), data={"grant_type": "client_credentials"}).json()["access_token"]
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"
    return session


def test_red_judgements_are_readable_only_by_their_owner_and_the_listed_users_and_groups(ctia, api):
    ctia.add_client("analyst", "analyst-password")  # another API client of the same organisation
    analyst = bearer(ctia, "analyst", "analyst-password")
    amber = api.post(f"{ctia.url}/ctia/judgement", json=judgement(external_ids=["x-amber"])).json()
    red = api.post(f"{ctia.url}/ctia/judgement", json=judgement(tlp="red", external_ids=["x-red"])).json()
    shared_user = api.post(f"{ctia.url}/ctia/judgement", json=judgement(tlp="red", authorized_users=["analyst"])).json()
    shared_org = api.post(f"{ctia.url}/ctia/judgement", json=judgement(tlp="red", authorized_groups=[ctia.org_id])).json()

    def short(entity):
        return entity["id"].rsplit("/", 1)[1]

    # The owner reads all four.
    assert len(api.get(f"{ctia.url}/ctia/judgement/search").json()) == 4
    assert api.get(f"{ctia.url}/ctia/judgement/{short(red)}").status_code == 200
    # Another client of the organisation reads amber and the red ones shared with it, not the others.
    seen = {j["id"] for j in analyst.get(f"{ctia.url}/ctia/judgement/search").json()}
    assert seen == {amber["id"], shared_user["id"], shared_org["id"]}
    assert analyst.get(f"{ctia.url}/ctia/judgement/search/count").json() == 3
    assert analyst.get(f"{ctia.url}/ctia/judgement/{short(red)}").status_code == 404
    assert analyst.get(f"{ctia.url}/ctia/judgement/external_id/x-red").json() == []
    assert analyst.get(f"{ctia.url}/ctia/judgement/external_id/x-amber").json()[0]["id"] == amber["id"]
    assert analyst.post(f"{ctia.url}/ctia/judgement/{short(red)}/expire", params={"reason": "no"}).status_code == 404
    assert analyst.get(f"{ctia.url}/ctia/judgement/{short(shared_user)}").status_code == 200
    # The switch: an emulator that lets the whole organisation read red.
    ctia.app.red_owner_only = False
    assert analyst.get(f"{ctia.url}/ctia/judgement/{short(red)}").status_code == 200
