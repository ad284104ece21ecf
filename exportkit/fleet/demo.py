"""``make fleet-demo``: a whole fleet on loopback, from nothing to "every instance healthy", then all stopped.

Starts PostgreSQL and Redis (throw-away servers, :mod:`exportkit.fleet.servers`),
the ThreatQ emulator and one CTIA emulator per instance, writes ten instances
scheduled every few seconds with their state in PostgreSQL, starts two workers
(each with its own copy of the config folder, as two hosts would have) and
beat, waits until every instance has run cleanly, prints ``exportkit fleet
status``, and stops everything it started.

Run it with ``python -m exportkit.fleet.demo [--instances N] [--keep-folder]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Sequence

from exportkit.config import write_config
from exportkit.demo import demo_config
from exportkit.fleet.servers import LocalPostgres, LocalRedis

__all__ = ["run_fleet_demo", "main"]


def _healthy(url: str, names: list[str]) -> dict[str, int | None]:
    """Instance -> exit code of its last finished run (``None`` before one)."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        exists = conn.execute("SELECT to_regclass('exportkit.runs')").fetchone()
        if exists is None or exists[0] is None:
            return {n: None for n in names}
        rows = conn.execute(
            "SELECT DISTINCT ON (instance) instance, exit_code FROM exportkit.runs WHERE finished IS NOT NULL "
            "ORDER BY instance, started DESC"
        ).fetchall()
    found: dict[str, int | None] = {str(r[0]): r[1] for r in rows}
    return {n: found.get(n) for n in names}


def run_fleet_demo(*, instances: int = 10, every: str = "10s", timeout: float = 240, keep_folder: bool = False,
                   echo: Any = print) -> int:
    """Run the demo; returns 0 when every instance's last run exited 0."""
    from exportkit.threatq.emulator import ThreatQEmulator
    from exportkit_ctia.emulator import CtiaEmulator

    folder = Path(tempfile.mkdtemp(prefix="exportkit-fleet-demo-"))
    procs: list[subprocess.Popen[bytes]] = []
    with ExitStack() as stack:
        if not keep_folder:
            stack.callback(shutil.rmtree, folder, True)

        def stop_all() -> None:
            for proc in procs:
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGTERM)
            for proc in procs:
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()

        echo("starting PostgreSQL, Redis and the emulators on 127.0.0.1 ...")
        pg = stack.enter_context(LocalPostgres())
        redis = stack.enter_context(LocalRedis())
        tq = stack.enter_context(ThreatQEmulator(indicators=300, seed=7))
        url = pg.create_database("fleet")
        hosts = [folder / "host-1", folder / "host-2"]
        hosts[0].mkdir(parents=True)
        names = [f"customer-{i:02d}" for i in range(1, instances + 1)]
        for name in names:
            ctia = stack.enter_context(CtiaEmulator())
            config = demo_config(tq, ctia, hosts[0])
            config["export"] = {"sinks": ["ctia"], "batch_size": 100}
            del config["sinks"]["stdout"]
            config["state"] = {"url": "env:EXPORTKIT_STATE_URL"}
            config["schedule"] = {"every": every}
            write_config(hosts[0] / f"{name}.toml", config)
        shutil.copytree(hosts[0], hosts[1])
        env = {**os.environ, "EXPORTKIT_STATE_URL": url}
        stack.callback(stop_all)  # runs before the servers stop (ExitStack unwinds in reverse)

        def start(label: str, *args: str) -> None:
            log = open(folder / f"{label}.log", "wb")
            procs.append(subprocess.Popen([sys.executable, "-m", "exportkit", *args], env={**env, "EXPORTKIT_HOSTNAME": label},
                                          stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True))

        for i, host in enumerate(hosts, 1):
            start(f"host-{i}", "fleet", "worker", "--broker", redis.url, "-c", str(host), "--hostname", f"worker@host-{i}")
        start("beat", "fleet", "beat", "--broker", redis.url, "-c", str(hosts[0]))
        echo(f"{instances} instances every {every} on two workers (host-1, host-2) and beat; waiting for every instance to run ...")
        deadline = time.monotonic() + timeout
        while True:
            state = _healthy(url, names)
            if all(code == 0 for code in state.values()):
                break
            if time.monotonic() > deadline:
                echo(f"not every instance ran cleanly within {timeout:.0f}s: {state}; logs in {folder}")
                keep_folder = True
                break
            time.sleep(1)
        status = subprocess.run([sys.executable, "-m", "exportkit", "fleet", "status", "-c", str(hosts[1])], env=env,
                                capture_output=True, text=True)
        echo("$ exportkit fleet status")
        echo(status.stdout.rstrip())
        healthy = all(code == 0 for code in _healthy(url, names).values())
        echo("every instance healthy; stopping the workers, beat and the servers" if healthy else "NOT every instance is healthy")
    return 0 if healthy and status.returncode == 0 else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m exportkit.fleet.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=10)
    parser.add_argument("--every", default="10s", help="the schedule of every instance")
    parser.add_argument("--keep-folder", action="store_true", help="keep the config folders and logs")
    args = parser.parse_args(argv)
    return run_fleet_demo(instances=args.instances, every=args.every, keep_folder=args.keep_folder)


if __name__ == "__main__":
    sys.exit(main())
