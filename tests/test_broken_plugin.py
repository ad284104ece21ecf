"""A plugin that raises at import is reported by name, with its error, and nothing else breaks.

The broken distribution is built as a wheel in tmp_path and installed with pip
into a private ``--target`` folder put on PYTHONPATH for a subprocess, so the
shared environment is never touched.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ERROR = "simulated import failure: the acme_sdk module is missing"


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def build_broken_wheel(folder: Path) -> Path:
    """A minimal, valid wheel whose ``exportkit`` entry point raises at import.

    Written by hand (a wheel is a zip with a dist-info folder), so no build
    backend and no network are needed.
    """
    dist_info = "exportkit_broken-0.0.1.dist-info"
    files = {
        "exportkit_broken/__init__.py": f"raise RuntimeError({ERROR!r})\n".encode(),
        f"{dist_info}/METADATA": b"Metadata-Version: 2.1\nName: exportkit-broken\nVersion: 0.0.1\n",
        f"{dist_info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: exportkit-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        f"{dist_info}/entry_points.txt": b"[exportkit]\nbroken = exportkit_broken\n",
        f"{dist_info}/top_level.txt": b"exportkit_broken\n",
    }
    record = [_record_line(name, data) for name, data in files.items()] + [f"{dist_info}/RECORD,,"]
    files[f"{dist_info}/RECORD"] = ("\n".join(record) + "\n").encode()
    path = folder / "exportkit_broken-0.0.1-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return path


@pytest.fixture(scope="module")
def broken_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("broken-plugin")
    wheel = build_broken_wheel(folder)
    target = folder / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", "--disable-pip-version-check",
         "--target", str(target), str(wheel)],
        check=True, capture_output=True, text=True, timeout=120,
    )
    assert (target / "exportkit_broken-0.0.1.dist-info" / "entry_points.txt").is_file()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(target), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.pop("EXPORTKIT_DISABLE_PLUGINS", None)
    return env


def exportkit(env: dict[str, str], *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "exportkit", *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=60)


def test_plugins_names_the_broken_plugin_and_its_error(broken_env: dict[str, str]) -> None:
    done = exportkit(broken_env, "plugins")
    line = next((line for line in done.stdout.splitlines() if line.startswith("broken ")), None)
    assert line is not None, done.stdout + done.stderr
    assert "exportkit-broken" in line and "0.0.1" in line and "FAILED TO LOAD" in line
    assert f"RuntimeError: {ERROR}" in line
    assert "EXPORTKIT_DISABLE_PLUGINS=broken" in done.stdout  # what to do about it
    # The healthy plugins are still listed.
    assert any(line.startswith("stdout ") for line in done.stdout.splitlines())


def test_plugins_json_lists_the_failure(broken_env: dict[str, str]) -> None:
    done = exportkit(broken_env, "plugins", "--json")
    data = json.loads(done.stdout)
    (failed,) = [f for f in data["failed"] if f["name"] == "broken"]
    assert failed["distribution"] == "exportkit-broken" and failed["error"] == f"RuntimeError: {ERROR}"
    assert "stdout" in {p["name"] for p in data["loaded"]}


def test_disabling_the_plugin_silences_it(broken_env: dict[str, str]) -> None:
    done = exportkit({**broken_env, "EXPORTKIT_DISABLE_PLUGINS": "broken"}, "plugins")
    # Not loaded, so no failure and no error text; listed as disabled, so nobody
    # wonders where it went. Disabling on purpose is not a failure: exit 0.
    assert done.returncode == 0, done.stdout + done.stderr
    assert "FAILED" not in done.stdout and ERROR not in done.stdout + done.stderr
    broken = [line for line in done.stdout.splitlines() if line.startswith("broken ")]
    assert broken == ["broken  exportkit-broken 0.0.1  disabled by EXPORTKIT_DISABLE_PLUGINS"]


def test_check_names_instance_file_setting_and_error(broken_env: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "records.jsonl").write_text("", encoding="utf-8")
    config = tmp_path / "siem.toml"
    config.write_text('[source]\ntype = "file"\npath = "records.jsonl"\n\n[export]\nsinks = ["broken", "stdout"]\n', encoding="utf-8")
    config.chmod(0o600)
    done = exportkit(broken_env, "check", "-n", "siem", "-c", str(tmp_path))
    assert done.returncode == 1
    assert "FAIL config" in done.stderr
    problem = next(line for line in done.stderr.splitlines() if "export.sinks" in line)
    assert str(config) in problem and "'broken'" in problem and f"RuntimeError: {ERROR}" in problem
