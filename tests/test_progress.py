"""The terminal progress line: count, rate, bar and time left, with a fake clock."""

from __future__ import annotations

from exportkit.cli.commands_run import ProgressLine
from exportkit.engine import Progress


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_rate_bar_and_time_left():
    clock, written = Clock(), []
    line = ProgressLine(True, clock=clock, write=written.append)
    line(Progress("pull", 0, 10_000))
    clock.now += 10
    line(Progress("pull", 2_500, 10_000))
    text = written[-1]
    assert "pull:" in text and "2,500/10,000 records" in text and "250/s" in text
    assert "30s left" in text
    assert text.count("#") == 7


def test_without_a_total_it_counts_and_a_new_stage_restarts_the_rate():
    clock, written = Clock(), []
    line = ProgressLine(True, clock=clock, write=written.append)
    line(Progress("pull", 0, None))
    clock.now += 4
    line(Progress("pull", 4_000, None))
    assert written[-1].strip().endswith("4,000 records, 1,000/s")
    clock.now += 1
    line(Progress("reconcile", 0, 50_000))
    clock.now += 2
    line(Progress("reconcile", 10_000, 50_000))
    assert "reconcile:" in written[-1] and "5,000/s" in written[-1] and "8s left" in written[-1]


def test_silent_when_not_on_a_terminal():
    written: list[str] = []
    line = ProgressLine(False, write=written.append)
    line(Progress("pull", 5, 10))
    line.done()
    assert written == []
