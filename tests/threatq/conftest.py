"""Fixtures for the ThreatQ tests: a small emulator per test and clients that do not sleep between retries."""

from __future__ import annotations

from typing import Any, Callable, Iterator

import pytest

from exportkit.http import RetryPolicy
from exportkit.secrets import Secret
from exportkit.threatq.client import ThreatQClient
from exportkit.threatq.emulator import ThreatQEmulator

FAST_RETRY = RetryPolicy(attempts=4, base_delay=0.0, max_delay=0.0, sleep=lambda _s: None)


@pytest.fixture
def tq() -> Iterator[ThreatQEmulator]:
    """A running emulator with 300 indicators (seed 5)."""
    with ThreatQEmulator(indicators=300, seed=5) as emulator:
        yield emulator


@pytest.fixture
def make_client(tq: ThreatQEmulator) -> Iterator[Callable[..., ThreatQClient]]:
    """Build password-grant clients for ``tq`` (keyword arguments override), closed after the test."""
    made: list[ThreatQClient] = []

    def build(**overrides: Any) -> ThreatQClient:
        creds = tq.credentials
        kwargs: dict[str, Any] = dict(client_id=creds.client_id, username=creds.username,
                                      password=Secret(creds.password), retry=FAST_RETRY, timeout=10)
        kwargs.update(overrides)
        host = kwargs.pop("host", tq.url)
        client = ThreatQClient(host, **kwargs)
        made.append(client)
        return client

    yield build
    for client in made:
        client.close()


@pytest.fixture
def fast_retry() -> RetryPolicy:
    """A retry policy that does not sleep."""
    return FAST_RETRY
