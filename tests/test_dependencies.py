"""Dependency floors stay past the advisories SECURITY.md names."""

from __future__ import annotations

import re
from importlib.metadata import version
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FLOORS = {"requests": (2, 32, 4), "jinja2": (3, 1, 6), "urllib3": (2, 5)}


def _floor(text: str, name: str) -> tuple[int, ...] | None:
    match = re.search(rf'"{name}>=([0-9.]+)', text, re.I)
    return tuple(int(p) for p in match.group(1).split(".")) if match else None


@pytest.mark.parametrize("project", ["pyproject.toml", "plugins/ctia/pyproject.toml", "plugins/stdout/pyproject.toml", "examples/webhook/pyproject.toml"])
def test_declared_floors_are_past_the_advisories(project):
    text = (ROOT / project).read_text()
    for name, floor in FLOORS.items():
        declared = _floor(text, name)
        if declared is not None or project == "pyproject.toml":
            assert declared is not None and declared >= floor, f"{project}: {name} floor {declared} < {floor}"


def test_installed_versions_meet_the_floors():
    for name, floor in FLOORS.items():
        installed = tuple(int(p) for p in re.findall(r"\d+", version(name))[:3])
        assert installed >= floor, name
