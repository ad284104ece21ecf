"""``make fleet-demo`` ends with every instance healthy and leaves nothing running (a smaller fleet here)."""

from __future__ import annotations

import subprocess

import pytest

from exportkit.fleet.demo import run_fleet_demo

pytestmark = [pytest.mark.integration, pytest.mark.fleet]


def ours() -> set[str]:
    """Processes of throw-away servers and fleet folders (the test session's own servers included)."""
    found = subprocess.run(["pgrep", "-f", "exportkit-fleet-demo-|exportkit-pg-|exportkit-redis-"], capture_output=True, text=True)
    return set(found.stdout.split())


def test_the_fleet_demo_ends_with_every_instance_healthy_and_everything_stopped():
    before = ours()
    lines: list[str] = []
    assert run_fleet_demo(instances=3, every="4s", echo=lines.append) == 0, "\n".join(lines)
    text = "\n".join(lines)
    assert "every instance healthy" in text
    for name in ("customer-01", "customer-02", "customer-03"):
        assert f"{name}: every 4s, next run" in text
    assert text.count("exit 0") == 3 and "on host-" in text
    assert ours() <= before, "the demo stopped its workers, beat and servers"
