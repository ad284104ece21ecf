"""Run reports: exit codes, JSON file, human summary."""

from __future__ import annotations

import json
import stat
from datetime import datetime, timezone

import pytest

from exportkit.report import RunReport, exit_code_for


def report(**kwargs) -> RunReport:
    r = RunReport(instance="i", run_id="r1", mode="incremental", dry_run=False, started=datetime(2024, 1, 1, tzinfo=timezone.utc))
    for key, value in kwargs.items():
        setattr(r, key, value)
    return r


@pytest.mark.parametrize(
    "sinks, new_dead, error, expected",
    [
        ({"a": {"deferred": 0, "error": None}}, 0, None, 0),
        ({"a": {"deferred": 2, "error": None}}, 0, None, 3),
        ({"a": {"deferred": 0, "error": None}}, 1, None, 3),
        ({"a": {"deferred": 5, "error": "x", "error_kind": "fatal"}, "b": {"deferred": 0, "error": None}}, 0, None, 3),
        ({"a": {"deferred": 5, "error": "x", "error_kind": "fatal"}}, 0, None, 1),
        ({"a": {"deferred": 5, "error": "x", "error_kind": "transient"}}, 0, None, 3),
        ({"a": {"deferred": 0, "error": None}}, 0, RuntimeError("boom"), 1),
        # A second Ctrl-C: state is saved per batch, the rest waits; the history must say 3 as the CLI does.
        ({"a": {"deferred": 0, "error": None}}, 0, KeyboardInterrupt(), 3),
    ],
)
def test_exit_codes(sinks, new_dead, error, expected):
    assert exit_code_for(report(sinks=sinks, dead_lettered_new=new_dead), error) == expected


def test_written_json_is_private_and_complete(tmp_path):
    r = report(sinks={"a": {"accepted": 3, "error": None, "notes": {"feed_url": "http://x"}}}, pulled=3)
    r.finished = datetime(2024, 1, 1, 0, 0, 2, tzinfo=timezone.utc)
    path = r.write(tmp_path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    data = json.loads(path.read_text())
    assert data["duration_seconds"] == 2.0 and data["started"] == "2024-01-01T00:00:00.000Z"
    assert data["sinks"]["a"]["notes"]["feed_url"] == "http://x"
    text = r.summary_text()
    assert "ok in 2.0s" in text and "a: 3 sent" in text and "feed_url: http://x" in text


def test_summary_reads_as_text_and_keeps_report_only_notes_out():
    notes = {"judgements": {"created": 630, "skipped": 143}, "feed_url": "http://x/view.txt?s=secret"}
    r = report(sinks={"ctia": {"accepted": 1, "error": None, "notes": notes, "notes_report_only": ["feed_url"]}}, pulled=1)
    text = r.summary_text()
    assert "source: 1 record pulled" in text
    assert "judgements: created 630, skipped 143" in text
    assert "{" not in text  # no Python reprs in cron mail
    assert "secret" not in text and "feed_url" not in text
    assert r.as_dict()["sinks"]["ctia"]["notes"]["feed_url"].endswith("s=secret")  # the report keeps it


def test_each_run_keeps_its_own_report_and_the_latest_is_linked(tmp_path):
    import os

    written = []
    for i in range(5):
        r = report(sinks={"a": {"accepted": i, "error": None}}, pulled=i)
        r.run_id = f"{i:012x}"
        path = r.write(tmp_path, keep=3)
        os.utime(path, ns=(i * 10**9, i * 10**9))  # the clock of a fast machine may not tell them apart
        written.append(path)
    kept = sorted(p.name for p in tmp_path.glob("i.report.*.json"))
    assert kept == [f"i.report.{i:012x}.json" for i in (2, 3, 4)]
    latest = tmp_path / "i.report.json"
    assert json.loads(latest.read_text())["run_id"] == f"{4:012x}"
    assert os.path.samefile(latest, written[-1]) and not latest.is_symlink()
    assert stat.S_IMODE(written[-1].stat().st_mode) == 0o600
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no temporary files left"
