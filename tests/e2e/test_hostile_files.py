"""Other local users and a careless umask, met through the real CLI: planted links, open folders, open files."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import file_instance, make_records, write_jsonl

pytestmark = pytest.mark.integration


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def run_with_umask(folder: Path, *args: str, umask: int = 0, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "exportkit", *args],
        cwd=folder, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
        env={**os.environ, **(env or {})}, preexec_fn=lambda: os.umask(umask),
    )


@pytest.fixture
def instance(tmp_path: Path) -> Path:
    write_jsonl(tmp_path / "records.jsonl", make_records(3))
    file_instance(tmp_path, "inst", {"stdout": {"format": "jsonl", "path": "out/records.jsonl"}})
    return tmp_path


@pytest.mark.parametrize("planted", ["inst.lock", "logs/inst.log", "logs/.inst.report.json.tmp", "inst.state.db"])
def test_a_link_planted_at_an_own_file_is_never_followed(instance, planted):
    (instance / "logs").mkdir(mode=0o700)
    victim = instance / "victim.txt"
    victim.write_text("precious\n")
    os.chmod(victim, 0o644)
    link = instance / planted
    if link.name.endswith(".db"):
        from exportkit.state import state_path

        link = state_path(instance, "inst")
    link.symlink_to(victim)
    result = run_with_umask(instance, "run", "-n", "inst", "-c", ".", "-ll", "logs", umask=0o022)
    assert "Traceback" not in result.stderr, result.stderr
    assert victim.read_text() == "precious\n", f"{planted}: the link's target was written"
    assert mode(victim) == 0o644
    if link.name.endswith(".tmp"):
        assert result.returncode == 0, result.stderr  # a fresh temporary name: the link is just ignored
    else:
        assert result.returncode == 1, result.stderr
        assert "symbolic link" in result.stderr


def test_under_umask_000_every_own_folder_is_0700_and_every_file_0600(tmp_path):
    folder = tmp_path / "cfg"
    write_jsonl(tmp_path / "records.jsonl", make_records(3))
    made = run_with_umask(
        tmp_path, "configure", "-n", "inst", "-c", "cfg", "--sink", "stdout", "--source-file", str(tmp_path / "records.jsonl"),
        "--set", f"sinks.stdout.path={tmp_path / 'out' / 'records.csv'}", "--set", "sinks.stdout.format=csv",
    )
    assert made.returncode == 0, made.stderr
    result = run_with_umask(tmp_path, "run", "-n", "inst", "-c", "cfg", "-ll", str(tmp_path / "logs"))
    assert result.returncode == 0, result.stderr
    assert mode(folder) == 0o700
    assert mode(tmp_path / "logs") == 0o700
    assert mode(tmp_path / "out") == 0o700
    files = [folder / "inst.toml", folder / "inst.lock", tmp_path / "logs" / "inst.log", tmp_path / "logs" / "inst.report.json", tmp_path / "out" / "records.csv"]
    files += [p for p in folder.iterdir() if "state" in p.name or p.suffix == ".db"]
    for path in files:
        assert path.exists(), path
        assert mode(path) == 0o600, f"{path} is {mode(path):o}"


def test_a_log_folder_writable_by_others_is_refused_with_what_to_fix(instance):
    logs = instance / "logs"
    logs.mkdir()
    os.chmod(logs, 0o777)
    result = run_with_umask(instance, "run", "-n", "inst", "-c", ".", "-ll", "logs", umask=0o022)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "writable by other users" in result.stderr and "chmod o-w" in result.stderr
    assert not (logs / "inst.log").exists()


def test_a_config_folder_writable_by_others_is_refused(instance):
    os.chmod(instance, 0o777)
    try:
        result = run_with_umask(instance, "run", "-n", "inst", "-c", ".", "-ll", "stdout", umask=0o022)
    finally:
        os.chmod(instance, 0o700)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "writable by other users" in (result.stderr + result.stdout)
    assert not (instance / "out" / "records.jsonl").exists()


def test_a_world_writable_config_is_refused_even_without_literal_secrets(instance):
    os.chmod(instance / "inst.toml", 0o666)
    result = run_with_umask(instance, "run", "-n", "inst", "-c", ".", umask=0o022)
    assert result.returncode == 1
    assert "writable by others" in result.stderr and "chmod" in result.stderr
    assert not (instance / "out" / "records.jsonl").exists()


def test_a_world_readable_file_secret_is_warned_about(tmp_path):
    from exportkit_ctia.emulator import CtiaEmulator

    with CtiaEmulator() as ctia:
        secret = tmp_path / "ctia.secret"
        secret.write_text(ctia.client_secret + "\n")
        os.chmod(secret, 0o644)
        write_jsonl(tmp_path / "records.jsonl", make_records(2))
        file_instance(tmp_path, "inst", {"ctia": ctia.sink_settings(client_password=f"file:{secret}")})
        result = run_with_umask(tmp_path, "check", "-n", "inst", "-c", ".", umask=0o022)
    assert "Traceback" not in result.stderr
    output = result.stdout + result.stderr
    assert f"{secret}" in output and "readable by others" in output
