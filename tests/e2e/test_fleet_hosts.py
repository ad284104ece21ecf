"""Two "hosts" (separate copies of the config folder) on one real PostgreSQL, through the real CLI.

Each host is a folder with its own copy of the instance config and its own
``EXPORTKIT_HOSTNAME``; they share only the PostgreSQL state, as two machines would.
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
from pathlib import Path
from typing import Any, Iterator

import psycopg
import pytest

from exportkit.config import write_config
from exportkit.demo import demo_config
from exportkit.threatq.emulator import ThreatQEmulator
from exportkit_ctia.emulator import CtiaEmulator

pytestmark = [pytest.mark.integration, pytest.mark.fleet]

INDICATORS = 1200


class Host:
    """One host: its config folder, its name, and the CLI run there with the state URL in its environment."""

    def __init__(self, folder: Path, name: str, state_url: str) -> None:
        self.folder = folder
        self.name = name
        self.env = {**os.environ, "EXPORTKIT_HOSTNAME": name, "FLEET_STATE_URL": state_url}
        self.env.pop("EXPORTKIT_CONFIG", None)
        self.env.pop("EXPORTKIT_STATE_URL", None)

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "exportkit", *args]

    def cli(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.argv(*args), cwd=self.folder, env=self.env, capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)

    def start(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(self.argv(*args), cwd=self.folder, env=self.env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)

    def run(self) -> tuple[int, dict[str, Any], str]:
        result = self.cli("run", "-n", "inst", "-c", ".")
        assert "Traceback" not in result.stderr, result.stderr
        report = json.loads((self.folder / "inst.report.json").read_text()) if result.returncode != 4 else {}
        return result.returncode, report, result.stderr


def live_by_indicator(ctia: CtiaEmulator) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    for judgement in ctia.live_judgements():
        out[judgement["source_uri"]].append(judgement)
    return out


def lock_holders(url: str) -> list[tuple[Any, ...]]:
    """(host, pid) of each run holding an instance lock now (none before the first run made the tables)."""
    with psycopg.connect(url, autocommit=True) as conn:
        if conn.execute("SELECT to_regclass('exportkit.lock_holders')").fetchone()[0] is None:
            return []
        return conn.execute(
            "SELECT h.host, h.pid FROM pg_locks l JOIN exportkit.lock_holders h ON h.backend_pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2"
        ).fetchall()


def wait_for(condition: Any, timeout: float, what: str) -> float:
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout, f"timed out waiting for {what}"
        time.sleep(0.05)
    return time.monotonic() - started


@pytest.fixture
def world(tmp_path: Path, pg_url: str) -> Iterator[tuple[ThreatQEmulator, CtiaEmulator, Host, Host, str]]:
    with ThreatQEmulator(indicators=INDICATORS, seed=11) as tq, CtiaEmulator() as ctia:
        folder_a = tmp_path / "host-a"
        folder_a.mkdir()
        config = demo_config(tq, ctia, folder_a)
        config["export"] = {"sinks": ["ctia"], "batch_size": 100}
        del config["sinks"]["stdout"]
        config["state"] = {"url": "env:FLEET_STATE_URL"}
        write_config(folder_a / "inst.toml", config)
        folder_b = tmp_path / "host-b"
        shutil.copytree(folder_a, folder_b)
        yield tq, ctia, Host(folder_a, "host-a", pg_url), Host(folder_b, "host-b", pg_url), pg_url


def test_concurrent_runs_on_two_hosts_exactly_one_runs_and_the_other_exits_4(world):
    tq, ctia, a, b, url = world
    ctia.faults.latency = 0.05  # long enough for the second host to try while the first runs
    first = a.start("run", "-n", "inst", "-c", ".")
    try:
        wait_for(lambda: lock_holders(url), 60, "host-a to take the lock")
        started = time.monotonic()
        code, _, stderr = b.run()
        assert code == 4, stderr
        assert time.monotonic() - started < 15, "refused at once, not after waiting"
        assert "host-a" in stderr and f"process {first.pid}" in stderr, stderr
    finally:
        _, first_err = first.communicate(timeout=300)
    assert first.returncode in (0, 3), first_err
    with psycopg.connect(url, autocommit=True) as conn:
        runs = conn.execute("SELECT host, exit_code FROM exportkit.runs WHERE instance = 'inst'").fetchall()
    assert runs == [("host-a", first.returncode)], "exactly one run, recorded with its host"
    live = live_by_indicator(ctia)
    assert live and all(len(js) == 1 for js in live.values())


def test_sigkill_mid_batch_on_one_host_then_the_other_host_finishes_with_one_live_judgement_each(world):
    tq, ctia, a, b, url = world
    ctia.faults.latency = 0.05
    victim = a.start("run", "-n", "inst", "-c", ".")
    try:
        wait_for(lambda: ctia.counts().get("judgement", 0) >= 150, 120, "host-a to send a batch or two")
    finally:
        os.kill(victim.pid, signal.SIGKILL)
        victim.communicate(timeout=30)
    assert victim.returncode == -signal.SIGKILL, "killed, not finished"
    sent_before = ctia.counts()["judgement"]
    # The lock went with host-a's connection: host-b gets it at once.
    assert wait_for(lambda: not lock_holders(url), 10, "the killed run's lock to go") < 5
    ctia.faults.latency = 0
    code, report, stderr = b.run()
    assert code in (0, 3), stderr
    assert report["sinks"]["ctia"]["deferred"] == 0 and report["sinks"]["ctia"]["error"] is None
    assert 0 < report["sinks"]["ctia"]["accepted"], "host-b carried on"
    assert report["checkpoint_before"] is not None or sent_before < 200, "host-b started from host-a's checkpoint"
    live = live_by_indicator(ctia)
    doubles = {uri: len(js) for uri, js in live.items() if len(js) != 1}
    assert not doubles, f"indicators with more than one live judgement: {doubles}"
    with psycopg.connect(url, autocommit=True) as conn:
        held = conn.execute("SELECT COUNT(*) FROM exportkit.holdings WHERE instance = 'inst' AND sink = 'ctia'").fetchone()[0]
    assert held == len(live), "the state holds exactly what is live in CTIA"
    # Nothing is left to send, from either host.
    before = ctia.counts()["judgement"]
    code, report, _ = a.run()
    assert code in (0, 3) and report["sinks"]["ctia"]["accepted"] == 0
    assert ctia.counts()["judgement"] == before


def test_state_migrate_moves_sqlite_state_and_either_host_runs_with_nothing_resent(world):
    tq, ctia, a, b, url = world
    # host-a has run on SQLite so far.
    config_a = (a.folder / "inst.toml").read_text()
    (a.folder / "inst.toml").write_text(config_a.replace('[state]\nurl = "env:FLEET_STATE_URL"\n', ""))
    (a.folder / "inst.toml").chmod(0o600)
    code, report, stderr = a.run()
    assert code in (0, 3), stderr
    accepted = report["sinks"]["ctia"]["accepted"]
    assert accepted > 100 and (a.folder / "inst.state.sqlite").exists()
    sent = ctia.counts()["judgement"]

    # host-b's config already points at PostgreSQL, which is empty: it refuses instead of sending everything again.
    shutil.copy(a.folder / "inst.state.sqlite", b.folder / "inst.state.sqlite")
    refused = b.cli("run", "-n", "inst", "-c", ".")
    assert refused.returncode == 1 and "state migrate" in refused.stderr, refused.stderr
    (b.folder / "inst.state.sqlite").unlink()

    moved = a.cli("state", "migrate", "-n", "inst", "-c", ".", "--to", "env:FLEET_STATE_URL")
    assert moved.returncode == 0, moved.stderr
    assert f"holdings {accepted}" in moved.stdout and "counts verified" in moved.stdout, moved.stdout
    password = url.split(":")[2].split("@")[0]
    assert password not in moved.stdout + moved.stderr

    # Still on SQLite, host-a refuses: its state moved.
    stale = a.cli("run", "-n", "inst", "-c", ".")
    assert stale.returncode == 1 and "moved to PostgreSQL" in stale.stderr, stale.stderr

    code, report, stderr = b.run()
    assert code in (0, 3), stderr
    assert report["sinks"]["ctia"]["accepted"] == 0, "host-b re-sent nothing"
    assert report["checkpoint_before"] is not None
    (a.folder / "inst.toml").write_text(config_a)
    (a.folder / "inst.toml").chmod(0o600)
    code, report, stderr = a.run()
    assert code in (0, 3) and report["sinks"]["ctia"]["accepted"] == 0, stderr
    assert ctia.counts()["judgement"] == sent, "nothing sent twice"
    shown = b.cli("state", "show", "-n", "inst", "-c", ".", "--json")
    data = json.loads(shown.stdout)
    assert data["holdings"] == {"ctia": accepted} and len(data["runs"]) == 3


def test_losing_postgres_mid_run_fails_cleanly_and_the_next_run_on_the_other_host_finishes(world):
    tq, ctia, a, b, url = world
    ctia.faults.latency = 0.05
    first = a.start("run", "-n", "inst", "-c", ".")
    try:
        wait_for(lambda: ctia.counts().get("judgement", 0) >= 150, 120, "host-a to send a batch or two")
        with psycopg.connect(url, autocommit=True) as conn:  # what a server restart does to a session
            cut = conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'exportkit state inst'"
            ).fetchall()
        assert cut == [(True,)]
    finally:
        _, stderr = first.communicate(timeout=120)
    assert first.returncode == 1, stderr
    assert "lost the PostgreSQL state postgresql://exportkit@127.0.0.1" in stderr and "Traceback" not in stderr, stderr
    assert url.split(":")[2].split("@")[0] not in stderr
    ctia.faults.latency = 0
    code, report, stderr = b.run()
    assert code in (0, 3) and report["sinks"]["ctia"]["deferred"] == 0, stderr
    live = live_by_indicator(ctia)
    assert live and all(len(js) == 1 for js in live.values())
