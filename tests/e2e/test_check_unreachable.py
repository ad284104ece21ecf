"""``exportkit check`` when nothing answers: it says so within seconds, not after a run's retries."""

from __future__ import annotations

import socket
import time

import pytest

from exportkit.config import write_config

pytestmark = pytest.mark.integration


def test_check_gives_up_quickly_on_silent_and_closed_endpoints(tmp_path, cli):
    with socket.socket() as silent, socket.socket() as closed:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # connections are accepted by the kernel, nothing ever answers
        closed.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
        write_config(tmp_path / "inst.toml", {
            "source": {"type": "threatq", "host": f"http://127.0.0.1:{silent.getsockname()[1]}", "client_id": "c",
                       "username": "u@example.com", "password": "env:TQ_PW", "collection": "X"},
            "export": {"sinks": ["ctia"]},
            "sinks": {"ctia": {"client_id": "c", "client_password": "env:CTIA_PW",
                               "api_url": f"http://127.0.0.1:{closed.getsockname()[1]}",
                               "token_url": f"http://127.0.0.1:{closed.getsockname()[1]}/iroh/oauth2/token"}},
        })
        started = time.monotonic()
        result = cli("check", "-n", "inst", "-c", ".", env={"TQ_PW": "pw", "CTIA_PW": "pw"})
        took = time.monotonic() - started
    assert result.returncode == 1
    assert "FAIL source" in result.stdout and "FAIL sink ctia" in result.stdout, result.stdout + result.stderr
    assert "connection refused" in result.stdout
    assert took < 30, f"check took {took:.0f}s; a run's retries and 60 s read timeout would take minutes"
