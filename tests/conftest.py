"""Real servers for the tests that need them: PostgreSQL and Redis on loopback (no mocks).

One PostgreSQL server and one Redis server per test session, started on
first use; each test that asks for ``pg_url`` gets a database of its own.
Tests using them are marked ``integration`` and ``fleet``.
"""

from __future__ import annotations

import itertools
from typing import Iterator

import pytest

from exportkit.fleet.servers import LocalPostgres, LocalRedis

_databases = itertools.count(1)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[LocalPostgres]:
    """A PostgreSQL server for the whole session (initdb in a temporary folder, 127.0.0.1, a free port)."""
    with LocalPostgres() as server:
        yield server


@pytest.fixture
def pg_url(postgres_server: LocalPostgres) -> str:
    """The URL (with password) of a new, empty database for this test."""
    return postgres_server.create_database(f"test_{next(_databases)}")


@pytest.fixture(scope="session")
def redis_server() -> Iterator[LocalRedis]:
    """A Redis server for the whole session (no persistence)."""
    with LocalRedis() as server:
        yield server
