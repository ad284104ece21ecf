"""The core, end to end: the real CLI with the file source and stdout sinks, real SQLite and files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import attrs
import pytest

from exportkit.lock import InstanceLock, lock_path

from .conftest import file_instance, make_records, read_jsonl, write_jsonl

pytestmark = pytest.mark.integration


def report(folder: Path, name: str) -> dict:
    return json.loads((folder / f"{name}.report.json").read_text())


def test_first_run_exports_all_second_none_then_only_changes(tmp_path, cli):
    records = make_records(3000)
    write_jsonl(tmp_path / "records.jsonl", records)
    file_instance(tmp_path, "inst", {"stdout": {"format": "jsonl", "path": "out.jsonl"}})

    first = cli("run", "-n", "inst", "-c", ".")
    assert first.returncode == 0, first.stderr
    out = read_jsonl(tmp_path / "out.jsonl")
    assert len(out) == 3000
    assert {r["source_id"] for r in out} == {r.source_id for r in records}
    assert "3000 sent" in first.stderr

    second = cli("run", "-n", "inst", "-c", ".")
    assert second.returncode == 0, second.stderr
    assert len(read_jsonl(tmp_path / "out.jsonl")) == 3000, "a second run must send nothing"
    assert report(tmp_path, "inst")["sinks"]["stdout"]["accepted"] == 0

    # Change 10 records (new score, later updated_at) and add 5 new ones.
    changed = [attrs.evolve(r, score=9.5, updated_at=r.updated_at.replace(year=2025)) for r in records[:10]]
    added = make_records(5, start=5001, minutes=600_000)
    write_jsonl(tmp_path / "records.jsonl", changed + records[10:] + added)
    third = cli("run", "-n", "inst", "-c", ".")
    assert third.returncode == 0, third.stderr
    sent = read_jsonl(tmp_path / "out.jsonl")[3000:]
    assert sorted(r["source_id"] for r in sent) == sorted([r.source_id for r in changed] + [r.source_id for r in added])
    assert all(r["score"] == 9.5 for r in sent if int(r["source_id"]) <= 10)


def test_touched_only_records_are_not_resent(tmp_path, cli):
    records = make_records(50)
    write_jsonl(tmp_path / "records.jsonl", records)
    file_instance(tmp_path, "inst", {"stdout": {"path": "out.jsonl"}})
    assert cli("run", "-n", "inst", "-c", ".").returncode == 0
    touched = [attrs.evolve(r, updated_at=r.updated_at.replace(year=2025)) for r in records]
    write_jsonl(tmp_path / "records.jsonl", touched)
    result = cli("run", "-n", "inst", "-c", ".")
    assert result.returncode == 0
    assert len(read_jsonl(tmp_path / "out.jsonl")) == 50
    assert report(tmp_path, "inst")["sinks"]["stdout"]["unchanged"] == 50


def test_failing_sink_holds_checkpoint_and_catches_up_without_resending_to_the_other(tmp_path, cli):
    write_jsonl(tmp_path / "records.jsonl", make_records(1200))
    (tmp_path / "blocker").write_text("a file where a folder should be")
    sinks = {
        "good": {"type": "stdout", "path": "good.jsonl"},
        "bad": {"type": "stdout", "path": "blocker/bad.jsonl"},
    }
    file_instance(tmp_path, "two", sinks)

    first = cli("run", "-n", "two", "-c", ".")
    assert first.returncode == 3, first.stderr  # partial: one sink deferred everything
    assert len(read_jsonl(tmp_path / "good.jsonl")) == 1200
    rep = report(tmp_path, "two")
    assert rep["sinks"]["bad"]["deferred"] == 1200
    assert "cannot open" in rep["sinks"]["bad"]["error"]
    assert rep["checkpoint_after"] is None, "the checkpoint must not move past undelivered records"

    # Fix the broken sink; the next run delivers to it and sends nothing again to the good one.
    sinks["bad"]["path"] = "bad.jsonl"
    file_instance(tmp_path, "two", sinks)
    second = cli("run", "-n", "two", "-c", ".")
    assert second.returncode == 0, second.stderr
    assert len(read_jsonl(tmp_path / "bad.jsonl")) == 1200
    assert len(read_jsonl(tmp_path / "good.jsonl")) == 1200
    rep = report(tmp_path, "two")
    assert rep["sinks"]["good"]["unchanged"] == 1200
    assert rep["checkpoint_after"]["source_id"] == "1200"


def test_lock_conflict_exits_4_and_names_the_pid(tmp_path, cli):
    write_jsonl(tmp_path / "records.jsonl", make_records(10))
    file_instance(tmp_path, "busy", {"stdout": {"path": "out.jsonl"}})
    file_instance(tmp_path, "free", {"stdout": {"path": "free.jsonl"}})
    with InstanceLock(lock_path(tmp_path, "busy"), "busy"):
        blocked = cli("run", "-n", "busy", "-c", ".")
        other = cli("run", "-n", "free", "-c", ".")
    assert blocked.returncode == 4
    assert str(os.getpid()) in blocked.stderr
    assert "already running" in blocked.stderr
    assert other.returncode == 0, "another instance runs side by side"
    assert not (tmp_path / "out.jsonl").exists()


def test_bad_config_lists_every_problem_and_exits_1_without_traceback(tmp_path, cli):
    (tmp_path / "broken.toml").write_text(
        '[source]\ntype = "file"\npaht = "x.jsonl"\n\n'
        '[export]\nsinks = ["stdout", "nosuch"]\nbatch_size = 0\nreconcile_evry = "1h"\n\n'
        '[sinks.stdout]\nformat = "xml"\n'
    )
    os.chmod(tmp_path / "broken.toml", 0o600)
    result = cli("run", "-n", "broken", "-c", ".")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    for expected in ("source.paht", "did you mean 'path'", "source.path", "export.batch_size", "reconcile_evry", "'nosuch'", "sinks.stdout.format", "'xml'"):
        assert expected in result.stderr, expected
    assert "6 problems" in result.stderr


def test_malformed_records_are_dead_lettered_and_the_run_goes_on(tmp_path, cli):
    good = make_records(20)
    write_jsonl(tmp_path / "records.jsonl", good, extra_lines=["{not json", json.dumps({"source_id": "77", "value": "x"})])
    file_instance(tmp_path, "inst", {"stdout": {"path": "out.jsonl"}})
    result = cli("run", "-n", "inst", "-c", ".")
    assert result.returncode == 3
    assert len(read_jsonl(tmp_path / "out.jsonl")) == 20
    shown = cli("dlq", "show", "-n", "inst", "-c", ".", "--json")
    letters = [json.loads(line) for line in shown.stdout.splitlines()]
    assert len(letters) == 2
    assert any(letter["source_id"] == "77" and "missing field" in letter["reason"] for letter in letters)
    again = cli("run", "-n", "inst", "-c", ".")
    assert again.returncode == 0, "the same broken lines are known already: not a new partial run"


def test_expired_and_removed_records_are_withdrawn(tmp_path, cli):
    records = make_records(30)
    write_jsonl(tmp_path / "records.jsonl", records)
    file_instance(tmp_path, "inst", {"stdout": {"path": "out.jsonl", "show_withdrawals": True}})
    assert cli("run", "-n", "inst", "-c", ".").returncode == 0
    expired = [attrs.evolve(r, status="Expired", updated_at=r.updated_at.replace(year=2025)) for r in records[:3]]
    write_jsonl(tmp_path / "records.jsonl", expired + records[3:25])  # 26..30 left the collection
    result = cli("run", "-n", "inst", "-c", ".", "--reconcile")
    assert result.returncode == 0, result.stderr
    lines = read_jsonl(tmp_path / "out.jsonl")[30:]
    withdrawn = {line["withdrawn"]: line["reason"] for line in lines}
    assert withdrawn == {**{str(i): "expired" for i in (1, 2, 3)}, **{str(i): "removed" for i in range(26, 31)}}
    state = cli("state", "show", "-n", "inst", "-c", ".")
    assert "stdout: 22 records" in state.stdout


def test_dry_run_sends_and_moves_nothing(tmp_path, cli):
    write_jsonl(tmp_path / "records.jsonl", make_records(40))
    file_instance(tmp_path, "inst", {"stdout": {"path": "out.jsonl"}})
    result = cli("run", "-n", "inst", "-c", ".", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "out.jsonl").exists()
    assert "40 sent" in result.stderr
    real = cli("run", "-n", "inst", "-c", ".")
    assert "40 sent" in real.stderr, "the dry run must not have recorded anything as held"


def test_historical_window_never_moves_the_checkpoint(tmp_path, cli):
    records = make_records(100)
    write_jsonl(tmp_path / "records.jsonl", records)
    file_instance(tmp_path, "inst", {"stdout": {"path": "out.jsonl"}})
    result = cli("run", "-n", "inst", "-c", ".", "-hist", "2024-03-01T00:00:10Z..2024-03-01T00:00:20Z")
    assert result.returncode == 0, result.stderr
    assert sorted(int(r["source_id"]) for r in read_jsonl(tmp_path / "out.jsonl")) == list(range(10, 20))
    assert report(tmp_path, "inst")["checkpoint_after"] is None
    full = cli("run", "-n", "inst", "-c", ".")
    assert full.returncode == 0
    assert len(read_jsonl(tmp_path / "out.jsonl")) == 100, "records of the window are not sent twice"


def test_logs_carry_instance_and_run_id_and_report_is_written(tmp_path, cli):
    write_jsonl(tmp_path / "records.jsonl", make_records(5))
    file_instance(tmp_path, "inst", {"stdout": {"path": "out.jsonl"}})
    result = cli("run", "-n", "inst", "-c", ".", "-ll", "logs", "-v", "3")
    assert result.returncode == 0, result.stderr
    log = (tmp_path / "logs" / "inst.log").read_text()
    rep = json.loads((tmp_path / "logs" / "inst.report.json").read_text())
    assert f"[inst/- run={rep['run_id']}]" in log
    assert rep["pulled"] == 5 and rep["exit_code"] == 0


def test_config_errors_and_lock_conflicts_reach_the_log_too(tmp_path, cli):
    (tmp_path / "broken.toml").write_text('[source]\ntype = "file"\n')
    os.chmod(tmp_path / "broken.toml", 0o600)
    assert cli("run", "-n", "broken", "-c", ".", "-ll", "logs").returncode == 1
    assert "source.path: is required but missing" in (tmp_path / "logs" / "broken.log").read_text()
    write_jsonl(tmp_path / "records.jsonl", make_records(3))
    file_instance(tmp_path, "busy", {"stdout": {"path": "out.jsonl"}})
    with InstanceLock(lock_path(tmp_path, "busy"), "busy"):
        assert cli("run", "-n", "busy", "-c", ".", "-ll", "logs").returncode == 4
    assert "already running" in (tmp_path / "logs" / "busy.log").read_text()


def test_relative_paths_start_at_the_config_folder_not_the_working_directory(tmp_path, cli):
    conf = tmp_path / "conf"
    conf.mkdir()
    write_jsonl(conf / "records.jsonl", make_records(4))
    (conf / "line.j2").write_text("{{ type }} {{ value }}")
    file_instance(conf, "inst", {"stdout": {"path": "out.txt", "template": "line.j2"}})
    result = cli("run", "-n", "inst", "-c", "conf")  # run from the folder above, as cron runs from $HOME
    assert result.returncode == 0, result.stderr
    assert (conf / "out.txt").read_text().splitlines()[0] == "ip 10.0.0.1"
    assert not (tmp_path / "out.txt").exists()


def test_log_format_json_writes_one_object_per_line(tmp_path, cli):
    write_jsonl(tmp_path / "records.jsonl", make_records(5))
    with open(tmp_path / "records.jsonl", "a") as fh:
        fh.write('{"broken\n')  # a dead letter: a line about it in the log
    file_instance(tmp_path, "inst", {"stdout": {"path": "out.jsonl"}})
    result = cli("run", "-n", "inst", "-c", ".", "-ll", "logs", "-v", "3", "--log-format", "json")
    assert result.returncode == 3, result.stderr
    lines = (tmp_path / "logs" / "inst.log").read_text().splitlines()
    entries = [json.loads(line) for line in lines]  # every line is one JSON object
    assert entries and all({"time", "level", "instance", "sink", "run_id", "logger", "message"} <= e.keys() for e in entries)
    assert {e["instance"] for e in entries} == {"inst"}
    assert "INFO" in {e["level"] for e in entries}
    assert any(e["message"].startswith("reconcile") for e in entries)
    assert all(e["time"].endswith("Z") for e in entries)
