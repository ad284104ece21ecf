"""TLP red is owner-only in CTIA: what the organisation's analysts see, with and without authorized readers."""

from __future__ import annotations

import attrs
import pytest
import requests

pytestmark = pytest.mark.integration


def analyst_view(ctia):
    """The live judgements another API client of the organisation (an analyst's tool) can read."""
    token = requests.post(ctia.token_url, auth=("analyst", "analyst-password"), data={"grant_type": "client_credentials"}).json()
    found = requests.get(f"{ctia.url}/ctia/judgement/search", headers={"Authorization": f"Bearer {token['access_token']}"}, timeout=5)
    return sorted(j["observable"]["value"] for j in found.json())


def test_red_judgements_are_invisible_to_the_organisation_by_default(ctia, harness, record):
    ctia.add_client("analyst", "analyst-password")
    h = harness()
    h.run([record("192.0.2.1", tlp="red"), record("192.0.2.2", tlp="amber")])
    assert len(ctia.live_judgements()) == 2
    assert analyst_view(ctia) == ["192.0.2.2"]


def test_authorized_groups_let_the_organisation_read_red_judgements(ctia, harness, record):
    ctia.add_client("analyst", "analyst-password")
    h = harness(authorized_groups=[ctia.org_id])
    h.run([record("192.0.2.1", tlp="red"), record("192.0.2.2", tlp="amber")])
    assert analyst_view(ctia) == ["192.0.2.1", "192.0.2.2"]
    assert ctia.live_judgements("ip", "192.0.2.1")[0]["authorized_groups"] == [ctia.org_id]


def test_authorized_users_name_the_readers(ctia, harness, record):
    ctia.add_client("analyst", "analyst-password")
    h = harness(authorized_users=["analyst"])
    red = record("192.0.2.1", tlp="red")
    h.run([red])
    assert analyst_view(ctia) == ["192.0.2.1"]
    assert ctia.live_judgements()[0]["authorized_users"] == ["analyst"] and "authorized_groups" not in ctia.live_judgements()[0]
    # The owner still manages its red judgements: a change supersedes one and expires the old one.
    h.run([attrs.evolve(red, score=2)])
    assert len(ctia.judgements()) == 2 and len(ctia.live_judgements()) == 1
