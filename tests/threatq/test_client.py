"""ThreatQClient against the emulator: auth variants, token reuse and renewal, retries, clear errors."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
import socket

import pytest
import requests

from exportkit.errors import SourceAuthError, SourceError
from exportkit.http import RetryPolicy
from exportkit.secrets import Secret
from exportkit.threatq.client import ThreatQClient, base_url, error_text, host_name


# -- pure functions ------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("tq.example.com", "https://tq.example.com"),
        (" tq.example.com/ ", "https://tq.example.com"),
        ("tq.example.com:8443", "https://tq.example.com:8443"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("https://tq.example.com/api", "https://tq.example.com"),
    ],
)
def test_base_url_assumes_https_and_keeps_scheme_and_port(host: str, expected: str) -> None:
    assert base_url(host) == expected


@pytest.mark.parametrize("host", ["", "ftp://tq.example.com", "https://"])
def test_base_url_refuses_what_is_no_host(host: str) -> None:
    with pytest.raises(ValueError):
        base_url(host)


def test_host_name_drops_scheme_and_port() -> None:
    assert host_name("https://tq.example.com:8443/") == "tq.example.com"
    assert host_name("tq.example.com") == "tq.example.com"


def test_error_text_flattens_every_error_shape() -> None:
    assert error_text({"errors": ["a", ["b", "c"]]}) == "a; b; c"
    assert error_text({"data": {"errors": {"value": ["is required"]}}}) == "value: is required"
    assert error_text({"message": "Server Error"}) == "Server Error"
    assert error_text(None) == ""


def test_repr_and_session_never_show_the_password() -> None:
    client = ThreatQClient("tq.example.com", client_id="cid", username="a@example.com", password=Secret("hunter2-secret"))
    assert "hunter2-secret" not in repr(client)
    assert "a@example.com" in repr(client)


def test_threatq_traffic_never_uses_a_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    client = ThreatQClient("tq.example.com", client_id="cid", username="u", password=Secret("p"), ca_bundle="/tmp/ca.pem")
    assert client.session.trust_env is False
    assert not client.session.proxies
    assert client.session.verify == "/tmp/ca.pem"
    assert ThreatQClient("h", client_id="c", verify_tls=False).session.verify is False


def test_timeout_is_connect_and_read() -> None:
    client = ThreatQClient("tq.example.com", client_id="cid", timeout=45)
    assert client.timeout == (10.0, 45.0)


# -- against the emulator ------------------------------------------------------------------



@pytest.mark.integration
def test_password_grant_signs_in_and_reuses_the_token(tq, make_client) -> None:
    client = make_client()
    types = client.get("/api/indicator/types")
    client.get("/api/indicator/statuses")
    assert len(types["data"]) == 34
    assert client.token_count == 1
    assert tq.tokens.issued["password"] == 1


@pytest.mark.integration
def test_client_credentials_grant_uses_basic_auth(tq, make_client) -> None:
    client = make_client(auth="client_credentials", username=None, password=None,
                         client_secret=Secret(tq.credentials.client_secret))
    assert client.get("/api/indicator/statuses")["total"] == 5
    assert tq.tokens.issued == {"password": 0, "client_credentials": 1, "refresh_token": 0}


@pytest.mark.integration
def test_rejected_password_names_the_user_not_the_password(tq, make_client) -> None:
    client = make_client(password=Secret("wrong-password-123"))
    with pytest.raises(SourceAuthError) as info:
        client.get("/api/indicator/types")
    message = str(info.value)
    assert tq.credentials.username in message
    assert "wrong-password-123" not in message
    assert "Traceback" not in message


@pytest.mark.integration
def test_rejected_client_secret_is_an_auth_error(tq, make_client) -> None:
    client = make_client(auth="client_credentials", client_secret=Secret("not-the-secret"))
    with pytest.raises(SourceAuthError, match="exportkit-emulator") as info:
        client.authenticate()
    assert "not-the-secret" not in str(info.value)


@pytest.mark.integration
def test_missing_credentials_fail_before_any_call(tq, make_client) -> None:
    with pytest.raises(SourceAuthError, match="username and a password"):
        make_client(password=None).authenticate()
    assert tq.app.calls == []


@pytest.mark.integration
def test_token_renewed_once_on_401_and_call_repeated(tq, make_client) -> None:
    client = make_client()
    client.get("/api/indicator/types")
    tq.expire_tokens()
    assert len(client.get("/api/indicator/types")["data"]) == 34
    assert client.token_count == 2
    assert tq.app.calls.count(("GET", "/api/indicator/types")) == 3  # ok, 401, ok


@pytest.mark.integration
def test_token_renewed_before_expires_in_runs_out(tq, make_client) -> None:
    tq.set_token_lifetime(100)
    now = [1000.0]
    client = make_client(clock=lambda: now[0])
    client.get("/api/indicator/types")
    now[0] += 80  # 10 s before the renewal margin of a 100 s token: kept
    client.get("/api/indicator/types")
    assert client.token_count == 1
    now[0] += 15  # inside the margin: still valid on the server, renewed by the client first
    client.get("/api/indicator/types")
    assert client.token_count == 2
    # No 401 was needed: each types call went through on the first try.
    assert tq.app.calls.count(("GET", "/api/indicator/types")) == 3


@pytest.mark.integration
def test_a_second_401_is_an_auth_error(tq, make_client) -> None:
    client = make_client()
    client.authenticate()
    tq.faults.fail_next(401, 2, path_prefix="/api/indicator/types")
    with pytest.raises(SourceAuthError, match="refused the token"):
        client.get("/api/indicator/types")


@pytest.mark.integration
def test_reads_are_retried_on_5xx(tq, make_client) -> None:
    client = make_client()
    client.authenticate()
    tq.faults.fail_next(503, 2, path_prefix="/api/indicator/types")
    assert client.get("/api/indicator/types")["total"] == 34
    assert tq.app.calls.count(("GET", "/api/indicator/types")) == 3


@pytest.mark.integration
def test_the_indicators_query_post_is_retried(tq, make_client) -> None:
    client = make_client()
    client.authenticate()
    tq.faults.fail_next(500, 1, path_prefix="/api/indicators/query")
    body = client.post("/api/indicators/query", params={"limit": 5}, json={"criteria": {}, "filters": {}})
    assert len(body["data"]) == 5


@pytest.mark.integration
def test_other_posts_are_not_repeated(tq, make_client) -> None:
    client = make_client()
    client.authenticate()
    tq.faults.fail_next(500, 1, path_prefix="/api/search/query")
    with pytest.raises(SourceError, match="HTTP 500"):
        client.post("/api/search/query", json={"name": "x", "json": {}})
    assert tq.app.calls.count(("POST", "/api/search/query")) == 1


@pytest.mark.integration
def test_persistent_5xx_is_a_source_error(tq, make_client) -> None:
    client = make_client()
    client.authenticate()
    tq.faults.fail_next(500, 10, path_prefix="/api/indicator/types")
    with pytest.raises(SourceError, match="kept failing"):
        client.get("/api/indicator/types")


@pytest.mark.integration
def test_errors_body_inside_200_is_a_source_error(tq, make_client) -> None:
    client = make_client()
    client.authenticate()
    tq.errors_next("Query failed: bad filter", path_prefix="/api/indicators/query")
    with pytest.raises(SourceError, match="Query failed: bad filter"):
        client.post("/api/indicators/query", json={"criteria": {}, "filters": {}})


@pytest.mark.integration
def test_slow_answers_time_out_into_a_source_error(tq, make_client) -> None:
    tq.set_latency(0.6)
    client = make_client(timeout=0.2, retry=RetryPolicy(attempts=2, base_delay=0, sleep=lambda _s: None))
    with pytest.raises(SourceError, match="no answer within 0.2s"):
        client.authenticate()


@pytest.mark.integration
def test_unreachable_host_is_a_source_error(make_client) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = make_client(host=f"http://127.0.0.1:{port}")
    with pytest.raises(SourceError, match=f"cannot reach ThreatQ at http://127.0.0.1:{port}"):
        client.authenticate()


@pytest.mark.integration
def test_http_404_is_a_source_error_with_the_server_text(make_client) -> None:
    client = make_client()
    with pytest.raises(SourceError, match="HTTP 404: Indicator not found"):
        client.get("/api/indicators/99999999")


def test_non_json_answer_is_a_source_error(monkeypatch: pytest.MonkeyPatch) -> None:
    client = ThreatQClient("tq.example.com", client_id="c", auth="client_credentials", client_secret=Secret("s3cr3t-value"))
    client._token, client._token_deadline = "t", float("inf")
    response = requests.Response()
    response.status_code = 200
    response._content = b"<html>login</html>"
    response.headers["Content-Type"] = "text/html"
    monkeypatch.setattr(client.session, "request", lambda *a, **k: response)
    with pytest.raises(SourceError, match="not JSON"):
        client.get("/api/indicator/types")


def _token_response(body: dict) -> requests.Response:
    response = requests.Response()
    response.status_code = 200
    response._content = __import__("json").dumps(body).encode()
    response.headers["Content-Type"] = "application/json"
    return response


@pytest.mark.parametrize(("body", "lifetime"), [({"access_token": "t"}, 1800), ({"access_token": "t", "expires_in": 3600}, 3600)])
def test_token_lifetime_from_expires_in_else_30_minutes(monkeypatch: pytest.MonkeyPatch, body: dict, lifetime: int) -> None:
    import time

    client = ThreatQClient("tq.example.com", client_id="c", username="u", password=Secret("pw-value-1"))
    monkeypatch.setattr(client.session, "post", lambda *a, **k: _token_response(body))
    client.authenticate()
    remaining = client._token_deadline - time.monotonic()
    assert lifetime - 61 < remaining <= lifetime - 59  # renewed a minute early


def test_token_answer_without_access_token_is_an_auth_error(monkeypatch: pytest.MonkeyPatch) -> None:
    client = ThreatQClient("tq.example.com", client_id="c", username="u", password=Secret("pw-value-1"))
    monkeypatch.setattr(client.session, "post", lambda *a, **k: _token_response({"token_type": "Bearer"}))
    with pytest.raises(SourceAuthError, match="no access token"):
        client.authenticate()


@pytest.mark.parametrize(
    ("content", "headers", "expected"),
    [
        (b'{"data": [{"id": 1, "value": "192.0.2.1"}], "total": 1}', {}, {"data": [{"id": 1, "value": "192.0.2.1"}], "total": 1}),
        (b'{"score": NaN}', {}, "nan"),  # orjson refuses NaN; the standard decoder takes it
        (b'{"id": 18446744073709551615, "n": -9223372036854775808}', {}, {"id": 18446744073709551615, "n": -9223372036854775808}),
        ('{"value": "\u00e9"}'.encode("utf-16"), {"Content-Type": "application/json; charset=utf-16"}, {"value": "\u00e9"}),
        (b"<html>maintenance</html>", {}, None),
        (b"", {}, None),
    ],
)
def test_json_bodies_decode_fast_and_as_before(content: bytes, headers: dict, expected: Any) -> None:
    from exportkit.threatq.client import _json_or_none

    response = requests.Response()
    response._content = content
    response.headers.update(headers)
    response.status_code = 200
    decoded = _json_or_none(response)
    if expected == "nan":
        assert decoded["score"] != decoded["score"]
    else:
        assert decoded == expected


@pytest.mark.integration
def test_http_403_is_a_bad_request_not_a_credentials_failure(tq, make_client) -> None:
    tq.faults.fail_next(403, body={"errors": ["The selected fields are invalid."]}, path_prefix="/api/indicators/query")
    with pytest.raises(SourceError) as info:
        make_client().post("/api/indicators/query", json={"criteria": {}, "filters": {}})
    assert not isinstance(info.value, SourceAuthError)
    message = str(info.value)
    assert "usually a bad request" in message and "not a credentials failure" in message
    assert "The selected fields are invalid." in message


@pytest.mark.integration
@pytest.mark.parametrize("offset", [0, 150, -200])
def test_server_now_is_threatq_clock_from_the_date_header(tq, make_client, offset: float) -> None:
    client = make_client()
    assert client.server_now() is None  # nothing answered yet
    tq.configure(clock_offset=offset)
    client.get("/api/indicator/statuses")
    host = datetime.now(timezone.utc)
    told = client.server_now()
    assert told is not None
    # An upper bound of ThreatQ's time, at most a second (the header's resolution) above it.
    assert timedelta(seconds=-0.1) <= told - (host + timedelta(seconds=offset)) <= timedelta(seconds=1.6)
