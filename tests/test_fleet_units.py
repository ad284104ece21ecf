"""The fleet's systemd units: shown verbatim in docs/fleet.md, sane for a long-running worker, valid for systemd."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
UNITS = ROOT / "contrib" / "systemd"
NAMES = ("exportkit-fleet-worker.service", "exportkit-fleet-beat.service")


def unit(name: str) -> configparser.SectionProxy:
    parsed = configparser.ConfigParser(strict=False, interpolation=None)
    parsed.read(UNITS / name)
    return parsed["Service"]


@pytest.mark.parametrize("name", NAMES)
def test_the_docs_show_the_shipped_unit_verbatim(name):
    text = (UNITS / name).read_text(encoding="utf-8")
    assert f"```ini\n{text}```" in (ROOT / "docs" / "fleet.md").read_text(encoding="utf-8")


def test_the_worker_lets_runs_finish_on_stop_and_comes_back():
    worker = unit("exportkit-fleet-worker.service")
    assert worker["KillMode"] == "mixed", "SIGTERM to the worker only: Celery's warm shutdown waits for runs"
    assert worker["Restart"] == "always" and "fleet worker" in worker["ExecStart"]
    assert worker["ProtectSystem"] == "strict" and "/etc/exportkit" in worker["ReadWritePaths"]
    beat = unit("exportkit-fleet-beat.service")
    assert beat["Restart"] == "always" and "fleet beat" in beat["ExecStart"]


@pytest.mark.integration
def test_systemd_accepts_the_units(tmp_path):
    analyze = shutil.which("systemd-analyze")
    exportkit = Path(sys.executable).parent / "exportkit"
    paths = []
    for name in NAMES:
        text = (UNITS / name).read_text(encoding="utf-8").replace("/opt/exportkit/venv/bin/exportkit", str(exportkit))
        (tmp_path / name).write_text(text, encoding="utf-8")
        paths.append(str(tmp_path / name))
    if analyze is None:  # no systemd tools on this machine: the INI must at least parse strictly
        parsed = configparser.ConfigParser(strict=True, interpolation=None)
        assert parsed.read(paths) == paths and parsed.has_section("Service") and parsed.has_section("Install")
        return
    result = subprocess.run([analyze, "verify", "--man=no", *paths], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
