"""Tokens: reused until shortly before expiry, renewed on a 401, bad credentials refused clearly."""

from __future__ import annotations

import pytest
import requests

from exportkit.errors import SinkAuthError, TransientError
from exportkit.http import RetryPolicy
from exportkit.secrets import Secret
from exportkit_ctia.auth import BearerAuth, TokenSource

pytestmark = pytest.mark.integration
FAST = RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.02)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def tokens(ctia, password=None, clock=None):
    return TokenSource(
        requests.Session(), ctia.token_url, ctia.client_id, Secret(password or ctia.client_secret),
        policy=FAST, clock=clock or Clock(),
    )


def test_token_is_reused_until_shortly_before_expiry(ctia):
    clock = Clock()
    source = tokens(ctia, clock=clock)
    first = source.token()
    clock.now += 500
    assert source.token() == first and ctia.tokens_issued == 1
    clock.now += 50  # 550 s of 600: within the renewal margin
    assert source.token() != first and ctia.tokens_issued == 2
    assert source.lifetime == 600


def test_short_lifetimes_renew_early(ctia):
    ctia.set_token_lifetime(10)
    clock = Clock()
    source = tokens(ctia, clock=clock)
    source.token()
    clock.now += 7
    source.token()
    assert ctia.tokens_issued == 1
    clock.now += 1.5  # past 4/5 of the lifetime
    source.token()
    assert ctia.tokens_issued == 2


def test_a_401_renews_the_token_once_and_repeats_the_call(ctia):
    session = requests.Session()
    auth = BearerAuth(tokens(ctia))
    assert session.get(f"{ctia.url}/ctia/judgement/search", auth=auth).status_code == 200
    ctia.revoke_tokens()
    response = session.get(f"{ctia.url}/ctia/judgement/search", auth=auth)
    assert response.status_code == 200 and [r.status_code for r in response.history] == [401]
    assert ctia.tokens_issued == 2
    # A server that keeps refusing gets one retry, not a loop.
    ctia.faults.fail_next(401, count=5, path_prefix="/ctia/")
    assert session.get(f"{ctia.url}/ctia/judgement/search", auth=auth).status_code == 401
    assert ctia.tokens_issued == 3


def test_bad_credentials_name_the_client_never_the_password(ctia):
    with pytest.raises(SinkAuthError) as info:
        tokens(ctia, password="not-the-password-42").token()
    assert ctia.client_id in str(info.value) and "not-the-password-42" not in str(info.value)
    assert "invalid_client" in str(info.value)


def test_token_endpoint_faults_are_retried_then_transient(ctia):
    ctia.faults.fail_next(503, count=1, path_prefix="/iroh/")
    assert tokens(ctia).token()
    ctia.faults.fail_next(503, count=3, path_prefix="/iroh/")
    with pytest.raises(TransientError):
        tokens(ctia).token()


def test_form_body_basic_auth_and_accept_json(ctia):
    # The emulator refuses anything but form + Basic; a JSON body gets 400.
    bad = requests.post(ctia.token_url, json={"grant_type": "client_credentials"}, auth=(ctia.client_id, ctia.client_secret))
    assert bad.status_code == 400
    assert tokens(ctia).token()
