"""``exportkit run --dry-run --plan FILE`` through the real CLI: a plan you can read, and a dry run that claims nothing."""

from __future__ import annotations

import json

import attrs
import pytest

from .conftest import file_instance, make_records, read_jsonl, write_jsonl

pytestmark = pytest.mark.integration


def test_the_plan_says_what_each_sink_would_do_with_each_record(tmp_path, cli):
    records = make_records(6)
    write_jsonl(tmp_path / "records.jsonl", records)
    file_instance(tmp_path, "inst", {"stdout": {"path": "out.jsonl"}})
    assert cli("run", "-n", "inst", "-c", ".").returncode == 0
    sent_before = read_jsonl(tmp_path / "out.jsonl")

    changed = attrs.evolve(records[1], score=9, updated_at=records[-1].updated_at.replace(minute=59))
    expired = attrs.evolve(records[2], status="Expired", updated_at=records[-1].updated_at.replace(minute=58))
    new = make_records(1, start=7, minutes=57)[0]
    write_jsonl(tmp_path / "records.jsonl", [*records[:1], *records[3:], expired, new, changed], extra_lines=["{broken"])

    result = cli("run", "-n", "inst", "-c", ".", "--dry-run", "--plan", "plan.jsonl")
    assert result.returncode in (0, 3), result.stderr
    plan = [json.loads(line) for line in (tmp_path / "plan.jsonl").read_text().splitlines()]
    actions = {(p["source_id"], p["action"]) for p in plan}
    assert ("2", "update") in actions and ("3", "expire") in actions and ("7", "create") in actions
    assert ("1", "unchanged") in actions
    assert all(p["sink"] == "stdout" and p["action"] in {"create", "update", "unchanged", "expire", "skip", "reject", "defer"} for p in plan)
    by_id = {p["source_id"]: p for p in plan}
    assert by_id["7"]["value"] == new.value and by_id["7"]["type"] == "ip"
    assert (tmp_path / "plan.jsonl").stat().st_mode & 0o077 == 0

    report = json.loads((tmp_path / "inst.report.json").read_text())
    assert report["dry_run"] and report["checkpoint_after"] == report["checkpoint_before"]
    assert report["dead_lettered_new"] == 0, "a dry run stores no dead letters, so it claims none"
    assert read_jsonl(tmp_path / "out.jsonl") == sent_before, "a dry run sends nothing"
    shown = cli("dlq", "show", "-n", "inst", "-c", ".")
    assert "no dead letters" in shown.stdout


def test_plan_needs_a_dry_run_and_plan_to_stdout_is_one_writer(tmp_path, cli):
    write_jsonl(tmp_path / "records.jsonl", make_records(3))
    file_instance(tmp_path, "inst", {"stdout": {"path": "out.jsonl"}})
    refused = cli("run", "-n", "inst", "-c", ".", "--plan", "p.jsonl")
    assert refused.returncode == 2 and "--dry-run" in refused.stderr
    to_stdout = cli("run", "-n", "inst", "-c", ".", "--dry-run", "--plan", "-")
    assert to_stdout.returncode == 0, to_stdout.stderr
    lines = [json.loads(line) for line in to_stdout.stdout.splitlines()]
    assert [p["action"] for p in lines] == ["create"] * 3
    both = cli("run", "-n", "inst", "-c", ".", "--dry-run", "--plan", "-", "--json")
    assert both.returncode == 2 and "would all write to standard output" in both.stderr
