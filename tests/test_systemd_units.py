"""The shipped systemd units: what docs/scheduling.md shows, and valid for systemd."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
UNITS = ROOT / "contrib" / "systemd"
NAMES = ("exportkit@.service", "exportkit@.timer")


@pytest.mark.parametrize("name", NAMES)
def test_the_docs_show_the_shipped_unit_verbatim(name):
    text = (UNITS / name).read_text(encoding="utf-8")
    assert f"```ini\n{text}```" in (ROOT / "docs" / "scheduling.md").read_text(encoding="utf-8")


def test_the_service_can_write_every_folder_the_docs_use():
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.read(UNITS / "exportkit@.service")
    service = unit["Service"]
    writable = {"/etc/exportkit"} | {f"/var/lib/{d}" for d in service["StateDirectory"].split()}
    writable |= {f"/var/log/{d}" for d in service["LogsDirectory"].split()}
    assert service["ProtectSystem"] == "strict"
    assert set(service["ReadWritePaths"].split()) | writable >= {"/etc/exportkit", "/var/lib/exportkit", "/var/log/exportkit"}
    assert set(service["SuccessExitStatus"].split()) == {"3", "4"}


@pytest.mark.integration
def test_systemd_accepts_the_units(tmp_path):
    """``systemd-analyze verify`` on an instance of the template, where the machine has systemd's tools."""
    analyze = shutil.which("systemd-analyze")
    exportkit = Path(sys.executable).parent / "exportkit"
    for name in NAMES:
        text = (UNITS / name).read_text(encoding="utf-8")
        # verify checks that ExecStart is executable: point it at this environment's command.
        text = text.replace("/opt/exportkit/venv/bin/exportkit", str(exportkit))
        (tmp_path / name.replace("@.", "@prod.")).write_text(text, encoding="utf-8")
    if analyze is None:  # no systemd tools here: the INI checks above are what can be checked
        parsed = configparser.ConfigParser(strict=True, interpolation=None)
        parsed.read([tmp_path / "exportkit@prod.service", tmp_path / "exportkit@prod.timer"])
        assert parsed.has_section("Service") and parsed.has_section("Timer")
        return
    result = subprocess.run(
        [analyze, "verify", "--man=no", str(tmp_path / "exportkit@prod.service"), str(tmp_path / "exportkit@prod.timer")],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "exportkit@prod" not in result.stderr, result.stderr  # unknown keys are only warned about
