"""First run and configure, through a real pseudo-terminal and without one."""

from __future__ import annotations

import os
import pty
import select
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from exportkit.config import read_toml
from exportkit.threatq.emulator import ThreatQEmulator
from exportkit_ctia.emulator import CtiaEmulator

pytestmark = pytest.mark.integration


class Terminal:
    """A child process on a pseudo-terminal: wait for a prompt, type an answer."""

    def __init__(self, args: list[str], cwd: Path, *, stdout: Any = None) -> None:
        """:param stdout: where the child's standard output goes (default: the terminal)."""
        self.master, slave = pty.openpty()
        env = {**os.environ, "COLUMNS": "200", "TERM": "dumb"}
        self.proc = subprocess.Popen(
            args, cwd=cwd, stdin=slave, stdout=slave if stdout is None else stdout, stderr=slave, env=env, close_fds=True
        )
        os.close(slave)
        self.output = ""

    def _read(self) -> bool:
        """Read what the child wrote in the next 0.2 s; False once the terminal is closed."""
        ready, _, _ = select.select([self.master], [], [], 0.2)
        if ready:
            try:
                self.output += os.read(self.master, 4096).decode("utf-8", "replace")
            except OSError:
                return False
        return True

    def expect(self, text: str, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.output:
            if time.monotonic() > deadline or not self._read():
                raise AssertionError(f"did not see {text!r}; output so far:\n{self.output}")

    def send(self, line: str) -> None:
        os.write(self.master, (line + "\r").encode())

    def finish(self, timeout: float = 30) -> int:
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline and self._read():
            pass
        return self.proc.wait(timeout=5)


def test_connector_first_run_asks_writes_0600_and_verifies(tmp_path):
    with ThreatQEmulator(indicators=50, seed=2, realistic=True) as tq, CtiaEmulator(org_rate_limit=8000) as ctia:
        term = Terminal([sys.executable, "-m", "exportkit.connector_cli", "-c", str(tmp_path)], tmp_path)
        creds = tq.credentials
        for prompt, answer in (
            ("ThreatQ Host", tq.url),
            ("ThreatQ Client ID", creds.client_id),
            ("ThreatQ Username", creds.username),
            ("ThreatQ Password", creds.password),
            ("Status", ""),
            ("Data Collection", "CTR Export"),
            ("ctia: client_id", ctia.client_id),
            ("ctia: client_password", ctia.client_secret),
            ("ctia: region", "eu"),
            ("ctia: api_url", ctia.url),
            ("ctia: token_url", ctia.token_url),
        ):
            term.expect(prompt)
            term.send(answer)
        code = term.finish()
    path = tmp_path / "tq-conn-ctr-exporter.toml"
    assert code == 0, term.output
    assert creds.password not in term.output, "the password is typed hidden"
    assert "Signed in to ThreatQ" in term.output
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    data = read_toml(path)
    assert data["source"]["host"] == tq.url and data["source"]["status"] == "Review"
    assert data["source"]["collection"] == "CTR Export"
    assert data["export"]["sinks"] == ["ctia"]
    assert data["sinks"]["ctia"]["client_id"] == ctia.client_id
    assert data["sinks"]["ctia"]["region"] == "eu"
    assert (data["sinks"]["ctia"]["api_url"], data["sinks"]["ctia"]["token_url"]) == (ctia.url, ctia.token_url)
    assert path.read_text().endswith("\n")


def test_prompts_go_to_the_terminal_never_to_stdout(tmp_path):
    """``exportkit run -n new > out.jsonl`` must not hang with the questions in the file."""
    out = tmp_path / "captured-stdout"
    with open(out, "w") as fh:
        term = Terminal([sys.executable, "-m", "exportkit", "run", "-n", "fresh", "-c", str(tmp_path)], tmp_path, stdout=fh)
        term.expect("ThreatQ Host")
        term.proc.kill()
        term.proc.wait()
    assert out.read_text() == ""


def test_a_mistyped_name_on_a_terminal_asks_before_creating_an_instance(tmp_path):
    (tmp_path / "prod.toml").write_text('[source]\ntype = "file"\npath = "x.jsonl"\n[export]\nsinks = ["stdout"]\n')
    os.chmod(tmp_path / "prod.toml", 0o600)
    term = Terminal([sys.executable, "-m", "exportkit", "run", "-n", "prdo", "-c", str(tmp_path)], tmp_path)
    term.expect("Create a new instance 'prdo'?")
    assert "prod" in term.output  # the instances that do exist are listed
    term.send("")  # the default is no
    assert term.finish() == 1
    assert "ThreatQ Host" not in term.output
    assert not (tmp_path / "prdo.toml").exists()


def test_first_run_without_a_terminal_explains_and_exits_1(tmp_path, cli):
    result = subprocess.run(
        [sys.executable, "-m", "exportkit.connector_cli", "-c", "."], cwd=tmp_path, capture_output=True, text=True, stdin=subprocess.DEVNULL
    )
    assert result.returncode == 1
    assert "no terminal" in result.stderr and "exportkit configure" in result.stderr
    assert "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_configure_non_interactive_from_options_and_environment(tmp_path, cli):
    with ThreatQEmulator(indicators=30, seed=4, realistic=True) as tq:
        creds = tq.credentials
        result = cli(
            "configure", "-n", "prod", "-c", ".", "--sink", "stdout", "--set", "sinks.stdout.path=out.jsonl",
            "--host", tq.url, "--client-id", creds.client_id, "--username", creds.username,
            "--password", "env:TQ_PASSWORD", "--collection", "CTR Export",
            env={"TQ_PASSWORD": creds.password},
        )
        assert result.returncode == 0, result.stderr
        assert creds.password not in (tmp_path / "prod.toml").read_text(), "a secret given by reference stays a reference"
        run = cli("run", "-n", "prod", "-c", ".", env={"TQ_PASSWORD": creds.password})
        assert run.returncode in (0, 3), run.stderr
        assert (tmp_path / "out.jsonl").stat().st_size > 0
        again = cli("configure", "-n", "prod", "-c", ".", "--source-file", "x.jsonl", "--sink", "stdout")
        assert again.returncode == 1 and "exists already" in again.stderr


def test_configure_rejects_wrong_credentials_naming_the_user_not_the_password(tmp_path, cli):
    with ThreatQEmulator(indicators=10, seed=4, realistic=True) as tq:
        result = cli(
            "configure", "-n", "prod", "-c", ".", "--sink", "stdout", "--host", tq.url, "--client-id", tq.credentials.client_id,
            "--username", tq.credentials.username, "--password", "wrong-password-123", "--collection", "CTR Export",
        )
        assert result.returncode == 1
        assert tq.credentials.username in result.stderr
        assert "wrong-password-123" not in result.stderr
        assert "Traceback" not in result.stderr
        assert not (tmp_path / "prod.toml").exists(), "a config that does not work is not written"
        fixed = cli(
            "configure", "-n", "prod", "-c", ".", "--sink", "stdout", "--host", tq.url, "--client-id", tq.credentials.client_id,
            "--username", tq.credentials.username, "--password", tq.credentials.password, "--collection", "CTR Export",
        )
        assert fixed.returncode == 0, fixed.stderr
        assert (tmp_path / "prod.toml").exists()
