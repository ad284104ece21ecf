"""The guarded transport: origin lock, deadline, size cap, safe JSON, abort (against local servers)."""

from __future__ import annotations

import threading
import time

import pytest
import requests

from exportkit.http import RetryPolicy, make_session
from exportkit.transport import DeadlineExceeded, RequestAborted, ResponseTooLarge, abort_requests, reset_abort, same_origin

from .e2e.hostile import HostileServer, answer, deep_json, drip, redirect_to


@pytest.fixture(autouse=True)
def clean_abort():
    reset_abort()
    yield
    reset_abort()


def test_same_origin_compares_scheme_host_and_port():
    assert same_origin("https://a.example/x", "https://A.example:443/y")
    assert not same_origin("https://a.example", "http://a.example")
    assert not same_origin("https://a.example", "https://b.example")
    assert not same_origin("http://127.0.0.1:1", "http://127.0.0.1:2")


@pytest.mark.integration
def test_redirects_are_not_followed_and_same_origin_only_on_request():
    with HostileServer() as elsewhere, HostileServer(redirect_to("")) as front:
        front.behave = redirect_to(elsewhere.url)
        answer_ = make_session().get(front.url + "/x", timeout=5, headers={"Authorization": "Bearer t"})
        assert answer_.status_code == 307 and elsewhere.seen == []
        answer_ = make_session(follow_redirects="same-origin").get(front.url + "/x", timeout=5)
        assert answer_.status_code == 307 and elsewhere.seen == []
        front.behave = lambda h: answer(h, 307, b"", Location="/final") if h.path == "/x" else answer(h, 200, b"{}")
        assert make_session(follow_redirects="same-origin").get(front.url + "/x", timeout=5).status_code == 200


@pytest.mark.integration
def test_a_drip_ends_at_the_total_deadline():
    with HostileServer(drip(every=0.2)) as server:  # each byte well within the socket timeout
        started = time.monotonic()
        with pytest.raises(DeadlineExceeded):
            make_session().get(server.url, timeout=(1, 1.5))
        assert time.monotonic() - started < 5


@pytest.mark.integration
def test_an_answer_over_the_cap_is_refused():
    with HostileServer(lambda h: answer(h, 200, b"x" * 5000)) as server:
        with pytest.raises(ResponseTooLarge):
            make_session(max_response_bytes=1000).get(server.url, timeout=5)
        assert make_session(max_response_bytes=10_000).get(server.url, timeout=5).content == b"x" * 5000


@pytest.mark.integration
def test_deep_json_in_an_answer_is_a_value_error():
    with HostileServer(lambda h: answer(h, 200, deep_json())) as server:
        with pytest.raises(ValueError):
            make_session().get(server.url, timeout=5).json()


@pytest.mark.integration
def test_abort_cuts_requests_in_flight_and_refuses_new_ones_without_retrying():
    with HostileServer(drip()) as server:
        threading.Timer(0.5, abort_requests, args=("test stop",)).start()
        started = time.monotonic()
        with pytest.raises(RequestAborted):
            make_session().get(server.url, timeout=60)
        assert time.monotonic() - started < 5
        slept: list[float] = []
        policy = RetryPolicy(sleep=slept.append)
        with pytest.raises(Exception, match="test stop"):
            policy.call(lambda: make_session().get(server.url, timeout=60), what="GET /")
        assert slept == []


def test_a_proxy_manager_keeps_its_own_pool_classes_watched():
    # A SOCKS proxy manager brings its own pools; replacing them would send traffic around the proxy.
    from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

    from exportkit.transport import _watch_pools

    class TunnelPool(HTTPSConnectionPool):
        pass

    class Manager:
        pool_classes_by_scheme = {"http": HTTPConnectionPool, "https": TunnelPool}

    manager = Manager()
    _watch_pools(manager)
    first = dict(manager.pool_classes_by_scheme)
    _watch_pools(manager)  # a cached manager comes back: wrapping again changes nothing
    assert manager.pool_classes_by_scheme == first
    assert issubclass(first["https"], TunnelPool) and issubclass(first["http"], HTTPConnectionPool)
