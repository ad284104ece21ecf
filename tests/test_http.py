"""Network failures said as what happened, and retried only when retrying can help (real sockets on loopback)."""

from __future__ import annotations

import http.server
import socket
import threading

import pytest
import requests

from exportkit.http import RetriesExhausted, RetryPolicy, describe_failure, make_session


@pytest.fixture
def plain_http_port():
    server = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    server.RequestHandlerClass.log_message = lambda *a: None  # type: ignore[method-assign]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_port
    server.shutdown()
    server.server_close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def attempt(url: str) -> tuple[RetriesExhausted, list[float]]:
    slept: list[float] = []
    policy = RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.01, sleep=slept.append)
    session = make_session()
    with pytest.raises(RetriesExhausted) as info:
        policy.call(lambda: session.get(url, timeout=(2, 2)), what="GET /")
    return info.value, slept


def test_https_to_a_plain_http_port_says_the_server_does_not_speak_tls_and_is_not_retried(plain_http_port):
    error, slept = attempt(f"https://127.0.0.1:{plain_http_port}/")
    assert "does not speak TLS" in str(error) and "certificate" not in str(error)
    assert error.lasting and slept == []


def test_an_unknown_host_name_is_told_apart_and_not_retried():
    error, slept = attempt("http://no-such-host.invalid/")
    assert "unknown host name 'no-such-host.invalid'" in str(error)
    assert error.lasting and slept == []


def test_connection_refused_is_told_apart_and_retried():
    port = free_port()
    error, slept = attempt(f"http://127.0.0.1:{port}/")
    assert f"connection refused by 127.0.0.1:{port}" in str(error)
    assert not error.lasting and len(slept) == 2


def test_describe_failure_names_timeouts_and_certificates():
    assert "no answer within 7s" in describe_failure(requests.ReadTimeout("x"), timeout=7)
    assert "could not connect within 3s" in describe_failure(requests.ConnectTimeout("x"), timeout=(3, 9))
    cert = requests.exceptions.SSLError("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: self-signed certificate")
    assert "certificate check failed" in describe_failure(cert) and "self-signed certificate" in describe_failure(cert)


def test_probing_makes_one_attempt_with_short_timeouts():
    """``exportkit check`` probes: a server that accepts and never answers is given up on in seconds."""
    from exportkit.transport import probing

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # accepts connections (the kernel does) and never answers
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/"
        slept: list[float] = []
        policy = RetryPolicy(attempts=5, base_delay=0.01, max_delay=0.01, sleep=slept.append)
        session = make_session()
        with probing(connect=1.0, read=1.0), pytest.raises(RetriesExhausted) as info:
            policy.call(lambda: session.get(url, timeout=(10, 60)), what="GET /")
    assert slept == [] and "failed after 1 attempt " in str(info.value)
    assert "no answer" in str(info.value) or "no complete answer" in str(info.value), str(info.value)
