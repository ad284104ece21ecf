"""The CTIA client: statuses sorted into what to do with them."""

from __future__ import annotations

import pytest

from exportkit.errors import SinkAuthError, SinkError, TransientError
from exportkit_ctia.client import Deferred, RequestRejected, short_id

pytestmark = pytest.mark.integration


def test_short_id():
    assert short_id("https://private.intel.amp.cisco.com:443/ctia/judgement/judgement-abc") == "judgement-abc"


def test_retry_after_beyond_the_cap_is_deferred_with_the_wait(ctia, ctia_client):
    c = ctia_client(max_retry_after=5)
    ctia.faults.fail_next(429, headers={"Retry-After": "3600"}, path_prefix="/ctia/")
    with pytest.raises(Deferred) as info:
        c.import_bundle({"type": "bundle", "source": "s"})
    assert info.value.retry_after == 3600 and isinstance(info.value, TransientError)


def test_size_refusal_names_the_limit(ctia, ctia_client):
    ctia.app.max_entities = 1
    body = {"type": "bundle", "source": "s", "relationships": [{"relationship_type": "x", "source_ref": "transient:a", "target_ref": "transient:b"}] * 2}
    with pytest.raises(RequestRejected) as info:
        ctia_client().import_bundle(body)
    assert info.value.max_entities == 1


def test_403_and_persistent_401_stop_the_sink(ctia, ctia_client):
    c = ctia_client()
    ctia.faults.fail_next(403, body={"error": "missing_capability"}, path_prefix="/ctia/")
    with pytest.raises(SinkError, match="private-intel"):
        c.probe()
    ctia.faults.fail_next(401, count=2, path_prefix="/ctia/")
    with pytest.raises(SinkAuthError):
        c.probe()


def test_expire_of_an_unknown_judgement_is_done(ctia, ctia_client):
    assert ctia_client().expire_judgement(f"{ctia.url}/ctia/judgement/judgement-00000000-0000-4000-8000-000000000000", "r") is False


def test_create_feed_finds_an_existing_one_first(ctia, ctia_client):
    c = ctia_client()
    body = {"type": "feed", "feed_type": "indicator", "output": "observables", "external_ids": ["exportkit-feed-1"]}
    first = c.create_feed(body, "exportkit-feed-1")
    assert c.create_feed(body, "exportkit-feed-1")["id"] == first["id"]
    assert len(ctia.feeds()) == 1
