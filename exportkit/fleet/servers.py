"""Throw-away PostgreSQL and Redis servers on loopback, for the fleet tests and ``make fleet-demo``.

Both are the real servers, started from the binaries on this machine (the
PostgreSQL server binaries, ``initdb``/``pg_ctl``, and ``redis-server``),
listening on 127.0.0.1 on a free port, with their data in a temporary folder
that is removed when they stop. Neither is for production: PostgreSQL runs
with ``fsync = off`` and Redis without persistence, to be quick.

PostgreSQL refuses to run as root; when this process is root, the server runs
as the ``postgres`` system user (Debian's packages create it), and its
folder is made over to that user. Example::

    with LocalPostgres() as pg, LocalRedis() as redis:
        url = pg.create_database("fleet")   # postgresql://exportkit:...@127.0.0.1:PORT/fleet
        broker = redis.url                  # redis://127.0.0.1:PORT/0
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = ["LocalPostgres", "LocalRedis", "ServerUnavailable", "free_port", "find_postgres_bin"]


class ServerUnavailable(RuntimeError):
    """The server's binaries are missing or it did not start (the message says which and how to install it)."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def find_postgres_bin(name: str) -> str:
    """The path of PostgreSQL server binary ``name`` (``initdb``, ``pg_ctl``): on PATH or in Debian's folder."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)
    if candidates:
        return candidates[0]
    raise ServerUnavailable(
        f"the PostgreSQL server binary {name} is not installed; on Debian: apt-get install -y postgresql"
    )


def _wait_for_port(port: int, timeout: float, what: str, proc: subprocess.Popen[Any] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise ServerUnavailable(f"{what} exited with status {proc.returncode} while starting")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise ServerUnavailable(f"{what} did not listen on 127.0.0.1:{port} within {timeout:.0f}s")


class LocalPostgres:
    """A PostgreSQL server in a temporary folder on 127.0.0.1 (password authentication).

    :param user: the superuser role the tests connect as.
    :param system_user: the Unix user that runs the server when this process is root.
    """

    def __init__(self, *, user: str = "exportkit", system_user: str = "postgres") -> None:
        self.user = user
        self.password = secrets.token_hex(12)
        self.port = 0
        self.folder: Path | None = None
        self._run_as: pwd.struct_passwd | None = None
        if os.geteuid() == 0:
            try:
                self._run_as = pwd.getpwnam(system_user)
            except KeyError:
                raise ServerUnavailable(
                    f"PostgreSQL will not run as root and there is no {system_user!r} user to run it as; "
                    "install Debian's postgresql package (it creates one) or run as another user"
                ) from None

    # --- lifecycle ------------------------------------------------------------------

    def start(self) -> LocalPostgres:
        initdb, pg_ctl = find_postgres_bin("initdb"), find_postgres_bin("pg_ctl")
        # Not under pytest's tmp_path: that folder is 0700 root, and the server may run as another user.
        self.folder = Path(tempfile.mkdtemp(prefix="exportkit-pg-"))
        data, pwfile = self.folder / "data", self.folder / "pw"
        pwfile.write_text(self.password + "\n")
        if self._run_as is not None:
            os.chown(self.folder, self._run_as.pw_uid, self._run_as.pw_gid)
            os.chown(pwfile, self._run_as.pw_uid, self._run_as.pw_gid)
        self._run([initdb, "-D", str(data), "-U", self.user, f"--pwfile={pwfile}", "--auth=scram-sha-256",
                   "--encoding=UTF8", "--locale=C", "--no-sync"])
        pwfile.unlink()
        self.port = free_port()
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories={self.folder} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200 "
            "-c shared_buffers=32MB"
        )
        self._run([pg_ctl, "-D", str(data), "-l", str(self.folder / "server.log"), "-o", options, "-w", "-t", "60", "start"])
        _wait_for_port(self.port, 30, "PostgreSQL")
        return self

    def stop(self) -> None:
        if self.folder is None:
            return
        data = self.folder / "data"
        if (data / "postmaster.pid").exists():
            try:
                self._run([find_postgres_bin("pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"])
            except ServerUnavailable:
                pass  # already gone
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder = None

    def __enter__(self) -> LocalPostgres:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- use --------------------------------------------------------------------------

    def url(self, database: str = "postgres") -> str:
        """A ``postgresql://`` URL (with the password) for ``database``."""
        return f"postgresql://{self.user}:{self.password}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """Create database ``name`` (dropping one of that name first); returns its URL."""
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def server_log(self) -> str:
        """What the server logged (for a failing test's message)."""
        log = self.folder / "server.log" if self.folder else None
        return log.read_text(errors="replace") if log and log.exists() else ""

    def _run(self, argv: list[str]) -> None:
        kwargs: dict[str, Any] = {}
        if self._run_as is not None:
            user = self._run_as

            def demote() -> None:
                os.setgid(user.pw_gid)
                os.setuid(user.pw_uid)

            kwargs["preexec_fn"] = demote
            kwargs["env"] = {**os.environ, "HOME": user.pw_dir, "USER": user.pw_name}
        result = subprocess.run(argv, capture_output=True, text=True, cwd=self.folder, stdin=subprocess.DEVNULL, **kwargs)
        if result.returncode != 0:
            raise ServerUnavailable(f"{Path(argv[0]).name} failed ({result.returncode}): {result.stderr.strip() or result.stdout.strip()}")


class LocalRedis:
    """``redis-server`` on 127.0.0.1, without persistence, in a temporary folder."""

    def __init__(self) -> None:
        self.port = 0
        self.folder: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The broker URL (database 0)."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> LocalRedis:
        binary = shutil.which("redis-server")
        if binary is None:
            raise ServerUnavailable("redis-server is not installed; on Debian: apt-get install -y redis-server")
        self.folder = Path(tempfile.mkdtemp(prefix="exportkit-redis-"))
        self.port = free_port()
        self._proc = subprocess.Popen(
            [binary, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "no",
             "--dir", str(self.folder), "--daemonize", "no", "--protected-mode", "yes"],
            stdout=open(self.folder / "redis.log", "wb"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
        _wait_for_port(self.port, 20, "redis-server", self._proc)
        return self

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None

    def __enter__(self) -> LocalRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
