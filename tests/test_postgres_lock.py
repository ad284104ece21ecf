"""The PostgreSQL instance lock on a real server: one holder per instance, named when it refuses another."""

from __future__ import annotations

import os

import pytest

from exportkit.errors import LockedError
from exportkit.postgres.connect import connect
from exportkit.postgres.lock import AdvisoryLock, lock_holders

pytestmark = [pytest.mark.integration, pytest.mark.fleet]


def test_a_second_holder_is_refused_with_the_host_and_pid_of_the_first(pg_url, monkeypatch):
    monkeypatch.setenv("EXPORTKIT_HOSTNAME", "worker-7")
    with AdvisoryLock(pg_url, "prod"):
        with pytest.raises(LockedError) as caught:
            AdvisoryLock(pg_url, "prod").acquire()
        assert caught.value.exit_code == 4 and caught.value.pid == os.getpid()
        assert f"on host worker-7, process {os.getpid()}" in str(caught.value)
        with AdvisoryLock(pg_url, "other"):  # another instance runs side by side
            conn = connect(pg_url, purpose="test")
            try:
                held = lock_holders(conn)
            finally:
                conn.close()
            assert set(held) == {"prod", "other"} and held["prod"]["host"] == "worker-7"
    with AdvisoryLock(pg_url, "prod") as again:  # released on exit
        assert again.held


def test_a_closed_connection_lets_the_lock_go(pg_url):
    first = AdvisoryLock(pg_url, "prod")
    first.acquire()
    first._conn.close()  # what a crash does: the session ends
    with AdvisoryLock(pg_url, "prod") as second:
        assert second.held
    first.release()


def test_an_unreachable_server_is_a_clear_error_without_the_password(pg_url):
    from exportkit.errors import ExportkitError

    bad = pg_url.rsplit(":", 1)[0] + ":1/nothing"  # nothing listens on port 1
    with pytest.raises(ExportkitError) as caught:
        AdvisoryLock(bad, "prod").acquire()
    message = str(caught.value)
    assert "cannot connect to the PostgreSQL state postgresql://exportkit@127.0.0.1:1/nothing (lock prod)" in message
    assert pg_url.split(":")[2].split("@")[0] not in message
