"""Hostile values from third-party feeds and servers, met through the real CLI: spreadsheets, terminals, logs."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest

from exportkit.config import write_config
from exportkit.records import Indicator
from exportkit.threatq.emulator import ThreatQEmulator

from .conftest import BASE_TIME, file_instance, write_jsonl
from .hostile import HostileServer, answer

pytestmark = pytest.mark.integration

FORMULAS = ["=HYPERLINK(\"http://evil.example\")", "+1+cmd|' /C calc'!A0", "-2+3", "@SUM(A1:A9)", "\tx.example.com", "\rx.example.com"]
CONTROL = "evil.example.com\x1b[31mRED\x07\x1b]0;title\x07"


def records(values: list[str]) -> list[Indicator]:
    return [
        Indicator.create(source="ThreatQ", source_id=i, value=v, type="domain", type_name="FQDN", status="Active", updated_at=BASE_TIME, tags=["t"])
        for i, v in enumerate(values, start=1)
    ]


def test_csv_cells_that_a_spreadsheet_would_run_are_neutralised(tmp_path, cli):
    write_jsonl(tmp_path / "records.jsonl", records(FORMULAS))
    file_instance(tmp_path, "inst", {"stdout": {"format": "csv", "path": "out.csv"}})
    result = cli("run", "-n", "inst", "-c", ".")
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader((tmp_path / "out.csv").open(encoding="utf-8", newline="")))
    assert len(rows) == len(FORMULAS)
    for row in rows:
        assert row["value"].startswith("'"), row["value"]
        assert not row["value"][1:2] in ("\t", "\r"), "control characters are escaped too"


def test_csv_formulas_keep_writes_values_as_they_are(tmp_path, cli):
    write_jsonl(tmp_path / "records.jsonl", records(["=1+1", "-5"]))
    file_instance(tmp_path, "inst", {"stdout": {"format": "csv", "path": "out.csv", "csv_formulas": "keep"}})
    assert cli("run", "-n", "inst", "-c", ".").returncode == 0
    values = [row["value"] for row in csv.DictReader((tmp_path / "out.csv").open(encoding="utf-8", newline=""))]
    assert values == ["=1+1", "-5"]


@pytest.mark.parametrize("fmt", ["csv", "text"])
def test_control_characters_are_escaped_visibly_in_csv_and_text(tmp_path, cli, fmt):
    write_jsonl(tmp_path / "records.jsonl", records([CONTROL, "line\nbreak.example.com"]))
    file_instance(tmp_path, "inst", {"stdout": {"format": fmt, "path": "out.txt"}})
    result = cli("run", "-n", "inst", "-c", ".")
    assert result.returncode == 0, result.stderr
    text = (tmp_path / "out.txt").read_text(encoding="utf-8")
    assert "\x1b" not in text and "\x07" not in text
    assert "\\x1b[31mRED\\x07" in text
    assert "line\\nbreak.example.com" in text
    assert len(text.splitlines()) == 2 + (fmt == "csv")


def test_a_server_error_text_cannot_forge_log_lines_or_reach_the_terminal(tmp_path, cli):
    forged = "bad credentials\n2024-01-01 00:00:00,000 ERROR [inst/- run=-] exportkit: FORGED all good\x1b[2J\x07"

    def behave(handler):
        answer(handler, 400, json.dumps({"errors": [forged]}).encode())

    with HostileServer(behave) as tq:
        write_config(
            tmp_path / "inst.toml",
            {
                "source": {"host": tq.url, "client_id": "c", "username": "u@example.com", "password": "env:TQ_PW", "collection": "X"},
                "export": {"sinks": ["stdout"]},
                "sinks": {"stdout": {"path": "out.jsonl"}},
            },
        )
        result = cli("run", "-n", "inst", "-c", ".", "-ll", "logs", "-v", "3", env={"TQ_PW": "pw-forge"})
    assert result.returncode == 1
    log = (tmp_path / "logs" / "inst.log").read_text(encoding="utf-8")
    assert "FORGED" in log, "the message is logged"
    stamp = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ")
    for line in log.splitlines():
        assert stamp.match(line) or line.startswith((" ", "Traceback")), f"a forged or broken log line: {line!r}"
        assert not line.startswith("2024-01-01"), "a forged log line"
    assert "\x1b" not in log and "\x07" not in log
    assert "\x1b" not in result.stderr and "\x07" not in result.stderr
    assert not any(line.startswith("2024-01-01") for line in result.stderr.splitlines())
    assert "FORGED" in result.stderr, "the summary names the error, escaped"


def test_an_html_description_is_unescaped_once(tmp_path, cli):
    with ThreatQEmulator(indicators=60, seed=5) as tq:
        first = sorted(tq.collection_ids("CTR Export"))[0]
        tq.update_indicator(first, description="<p>&amp;lt;script&amp;gt;alert(1)&amp;lt;/script&amp;gt;</p>")
        creds = tq.credentials
        write_config(
            tmp_path / "inst.toml",
            {
                "source": {"host": tq.url, "client_id": creds.client_id, "username": creds.username, "password": "env:TQ_PW", "collection": "CTR Export"},
                "export": {"sinks": ["stdout"]},
                "sinks": {"stdout": {"path": "out.jsonl"}},
            },
        )
        result = cli("run", "-n", "inst", "-c", ".", env={"TQ_PW": creds.password})
    assert result.returncode == 0, result.stderr
    rows = {r["source_id"]: r for r in map(json.loads, (tmp_path / "out.jsonl").read_text().splitlines())}
    assert rows[str(first)]["description"] == "&lt;script&gt;alert(1)&lt;/script&gt;"


def test_jsonl_output_carries_no_raw_terminal_controls_and_reads_back_the_same(tmp_path, cli):
    value = "c1\x9b31m.example.com\u202egro.elpmaxe\x1b"
    write_jsonl(tmp_path / "records.jsonl", records([value]))
    file_instance(tmp_path, "inst", {"stdout": {"format": "jsonl", "path": "out.jsonl"}})
    assert cli("run", "-n", "inst", "-c", ".").returncode == 0
    raw = (tmp_path / "out.jsonl").read_text(encoding="utf-8")
    assert not any(ch in raw for ch in "\x9b\u202e\x1b")
    assert json.loads(raw)["value"] == value
