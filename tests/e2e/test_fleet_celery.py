"""Scheduled runs on two Celery workers over real Redis and PostgreSQL; one worker is killed halfway.

Six instances, each exporting the same ThreatQ collection to a CTIA emulator
of its own, every few seconds. Worker "worker-a" is killed with SIGKILL (with
the run it was doing) while it runs an instance; every instance must go on
running on "worker-b", and in the end each CTIA holds exactly one live
judgement per indicator, the same set for every instance, matching the state.
"""

from __future__ import annotations

import collections
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from contextlib import ExitStack
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import psycopg
import pytest

from exportkit.config import write_config
from exportkit.demo import demo_config
from exportkit.threatq.emulator import ThreatQEmulator
from exportkit_ctia.emulator import CtiaEmulator

pytestmark = [pytest.mark.integration, pytest.mark.fleet]

INSTANCES = 6
EVERY = "5s"


class Fleet:
    """Worker, beat and CLI processes of one test, each in its own process group (killed at the end)."""

    def __init__(self, tmp_path: Path, state_url: str, broker: str) -> None:
        self.tmp_path = tmp_path
        self.broker = broker
        self.env = {**os.environ, "FLEET_STATE_URL": state_url, "EXPORTKIT_VISIBILITY_TIMEOUT": "20"}
        self.env.pop("EXPORTKIT_STATE_URL", None)
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        env = {**self.env, "EXPORTKIT_HOSTNAME": name}
        log = open(self.tmp_path / f"{name}.log", "wb")
        proc = subprocess.Popen([sys.executable, "-m", "exportkit", *args], env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        self.procs.append(proc)
        return proc

    def worker(self, name: str, folder: Path) -> subprocess.Popen[bytes]:
        return self.start(name, "fleet", "worker", "--broker", self.broker, "-c", str(folder), "--concurrency", "2",
                          "--hostname", f"{name}@test")

    def log(self, name: str) -> str:
        return (self.tmp_path / f"{name}.log").read_text(errors="replace")

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(30)


def runs(url: str) -> list[dict[str, Any]]:
    with psycopg.connect(url, autocommit=True) as conn:
        if conn.execute("SELECT to_regclass('exportkit.runs')").fetchone()[0] is None:
            return []
        rows = conn.execute("SELECT instance, host, started, finished, exit_code, summary FROM exportkit.runs ORDER BY seq").fetchall()
    return [{"instance": r[0], "host": r[1], "started": r[2], "finished": r[3], "exit_code": r[4],
             "summary": json.loads(r[5]) if r[5] else None} for r in rows]


def running_hosts(url: str) -> set[str]:
    with psycopg.connect(url, autocommit=True) as conn:
        if conn.execute("SELECT to_regclass('exportkit.lock_holders')").fetchone()[0] is None:
            return set()
        rows = conn.execute(
            "SELECT h.host FROM pg_locks l JOIN exportkit.lock_holders h ON h.backend_pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2"
        ).fetchall()
    return {r[0] for r in rows}


def held(url: str, instance: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM exportkit.holdings WHERE instance = %s AND sink = 'ctia'", (instance,)).fetchone()[0])


def live_values(ctia: CtiaEmulator) -> collections.Counter[str]:
    return collections.Counter(j["source_uri"] for j in ctia.live_judgements())


@pytest.fixture
def fleet(tmp_path: Path, pg_url: str, redis_server: Any) -> Iterator[tuple[Fleet, dict[str, CtiaEmulator], Path, Path, str]]:
    with ExitStack() as stack:
        tq = stack.enter_context(ThreatQEmulator(indicators=400, seed=5))
        folder_a, folder_b = tmp_path / "worker-a", tmp_path / "worker-b"
        folder_a.mkdir()
        ctias: dict[str, CtiaEmulator] = {}
        for i in range(INSTANCES):
            name = f"inst{i}"
            ctia = stack.enter_context(CtiaEmulator())
            ctia.faults.latency = 0.03  # runs long enough to be caught mid-way
            ctias[name] = ctia
            config = demo_config(tq, ctia, folder_a)
            config["export"] = {"sinks": ["ctia"], "batch_size": 40}
            del config["sinks"]["stdout"]
            config["state"] = {"url": "env:FLEET_STATE_URL"}
            config["schedule"] = {"every": EVERY}
            write_config(folder_a / f"{name}.toml", config)
        shutil.copytree(folder_a, folder_b)
        redis_server_flush(redis_server.url)
        fleet = Fleet(tmp_path, pg_url, redis_server.url)
        stack.callback(fleet.stop)
        yield fleet, ctias, folder_a, folder_b, pg_url


def redis_server_flush(url: str) -> None:
    import redis

    redis.Redis.from_url(url).flushall()


def wait_for(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f}s waiting for {what}"
        time.sleep(0.2)


def test_a_worker_killed_halfway_loses_nothing_and_every_instance_keeps_running(fleet):
    fleet_, ctias, folder_a, folder_b, url = fleet
    worker_a = fleet_.worker("worker-a", folder_a)
    fleet_.worker("worker-b", folder_b)
    fleet_.start("beat", "fleet", "beat", "--broker", fleet_.broker, "-c", str(folder_a))

    # Kill worker-a (and the run it is doing) in the middle of a run: lock held, history row started.
    def mid_run() -> bool:
        return "worker-a" in running_hosts(url) and any(r["host"] == "worker-a" and r["finished"] is None for r in runs(url))

    wait_for(mid_run, 120, "worker-a to be in the middle of a run")
    os.killpg(worker_a.pid, signal.SIGKILL)
    worker_a.wait(30)
    killed_at = datetime.now(timezone.utc).isoformat()

    def settled() -> bool:
        # Every instance ran to the end on worker-b after the kill, twice (it keeps its schedule).
        done = collections.Counter(
            r["instance"] for r in runs(url)
            if r["host"] == "worker-b" and r["finished"] and r["started"] > killed_at[:23] and r["exit_code"] in (0, 3)
        )
        return len(done) == INSTANCES and min(done.values()) >= 2

    wait_for(settled, 150, "every instance to run on worker-b after the kill")

    history = runs(url)
    assert any(r["host"] == "worker-a" for r in history), "worker-a ran instances before it died"
    interrupted = [r for r in history if r["host"] == "worker-a" and r["finished"] is None]
    assert interrupted, "the run killed with worker-a left an unfinished history row"
    assert not any(r["host"] == "worker-a" and r["started"] > killed_at[:23] for r in history)

    expected: set[str] | None = None
    for name, ctia in ctias.items():
        live = live_values(ctia)
        twice = {uri: n for uri, n in live.items() if n != 1}
        assert not twice, f"{name}: indicators with more than one live judgement: {twice}"
        assert held(url, name) == len(live), f"{name}: the state holds exactly what is live in CTIA"
        expected = expected or set(live)
        assert set(live) == expected, f"{name}: every instance exported the same collection completely"
    assert expected and len(expected) > 50

    status = subprocess.run([sys.executable, "-m", "exportkit", "fleet", "status", "-c", str(folder_b), "--json"],
                            env=fleet_.env, capture_output=True, text=True, timeout=60)
    assert status.returncode == 0, status.stderr
    rows = {row["name"]: row for row in json.loads(status.stdout)}
    assert set(rows) == set(ctias)
    for row in rows.values():
        assert row["schedule"] == f"every {EVERY}" and row["next_run"] > killed_at[:23]
        assert row["last_run"]["host"] in ("worker-b", None) or row["running"] is not None
