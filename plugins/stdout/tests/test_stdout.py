"""The stdout sink: formats, templates, files, dry runs and withdrawals."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from exportkit import ConfigError, Indicator, SinkError, Withdrawal
from exportkit.testing import SinkHarness, make_indicator, make_indicators
from exportkit_stdout import CSV_COLUMNS, StdoutSettings, StdoutSink, exportkit_sink_types

(SINK_TYPE,) = exportkit_sink_types()


def harness(**raw) -> SinkHarness:
    return SinkHarness.from_type(SINK_TYPE, raw)


def test_sink_type_describes_itself():
    assert SINK_TYPE.name == "stdout" and SINK_TYPE.settings_class is StdoutSettings and SINK_TYPE.factory is StdoutSink


def test_jsonl_round_trips_through_from_dict(tmp_path):
    out = tmp_path / "out.jsonl"
    records = make_indicators(3, tags=("c2", "ünï"), attributes=[("Port", "443")], description="a\nb")
    outcomes = harness(path=str(out)).send(records)
    assert [o.status for o in outcomes] == ["accepted"] * 3
    lines = out.read_text(encoding="utf-8").splitlines()
    assert [Indicator.from_dict(json.loads(text)) for text in lines] == records
    assert "ünï" in lines[0]  # not \u-escaped


def test_standard_output(capsys):
    harness().send(make_indicators(2))
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(text)["source_id"] for text in lines] == ["1", "2"]


def read_csv(path: Path) -> list[list[str]]:
    return list(csv.reader(io.StringIO(path.read_text(encoding="utf-8"))))


def test_csv_header_once_per_file(tmp_path):
    out = tmp_path / "out.csv"
    h = harness(format="csv", path=str(out))
    with h.session():
        h.write(make_indicators(2))
        h.write(make_indicators(1, start=3, tags=("a", "b"), score=None))
    rows = read_csv(out)
    assert rows[0] == list(CSV_COLUMNS)
    assert [r[1] for r in rows[1:]] == ["1", "2", "3"]
    third = dict(zip(CSV_COLUMNS, rows[3]))
    assert third["tags"] == "a|b" and third["score"] == "" and third["updated_at"].endswith("Z")


def test_csv_appending_to_an_existing_file_writes_no_second_header(tmp_path):
    out = tmp_path / "out.csv"
    harness(format="csv", path=str(out)).send(make_indicators(1))
    harness(format="csv", path=str(out)).send(make_indicators(1, start=2))
    rows = read_csv(out)
    assert [r[0] for r in rows].count("source") == 1
    assert [r[1] for r in rows[1:]] == ["1", "2"]


def test_choice_is_case_insensitive(tmp_path):
    out = tmp_path / "out.csv"
    harness(format="CSV", path=str(out)).send(make_indicators(1))
    assert read_csv(out)[0] == list(CSV_COLUMNS)


def test_text_format(tmp_path):
    out = tmp_path / "out.txt"
    harness(format="text", path=str(out)).send([make_indicator(tags=("a", "b")), make_indicator(source_id="2", score=None, tlp=None, tags=())])
    first, second = out.read_text().splitlines()
    assert first.startswith("ip 203.0.113.1 | status=Active score=7.5 tlp=amber tags=a,b | ThreatQ#1 updated ")
    assert "score=- tlp=-" in second and "tags=" not in second


def test_user_template(tmp_path):
    template = tmp_path / "t.j2"
    template.write_text("{{ source_id }};{{ value|upper }};{{ record.type_name }};{{ tags|join('+') }}\n\n")
    out = tmp_path / "out.txt"
    harness(template=str(template), path=str(out)).send([make_indicator(value="abc.example", type_name="FQDN", tags=("x", "y"))])
    assert out.read_text() == "1;ABC.EXAMPLE;FQDN;x+y\n"


def test_misspelt_template_field_is_a_settings_problem(tmp_path):
    template = tmp_path / "t.j2"
    template.write_text("{{ valeu }}\n")
    with pytest.raises(ConfigError) as info:
        harness(template=str(template))
    (problem,) = info.value.problems
    assert problem.key == "sinks.stdout.template" and "valeu" in problem.message


def test_undefined_field_fails_at_render_too(tmp_path):
    # A field used only in a branch the check did not take still fails loudly, never prints nothing.
    template = tmp_path / "t.j2"
    template.write_text("{% if status == 'Review' %}{{ nope }}{% endif %}{{ value }}\n")
    h = harness(template=str(template), path=str(tmp_path / "out.txt"))
    h.open()
    import jinja2

    with pytest.raises(jinja2.UndefinedError):
        h.write([make_indicator(status="Review")])
    h.close(None)


def test_template_that_does_not_exist_or_compile(tmp_path):
    bad = tmp_path / "bad.j2"
    bad.write_text("{{ value ")
    with pytest.raises(ConfigError) as info:
        harness(template=str(bad))
    assert "syntax error on line 1" in info.value.problems[0].message
    with pytest.raises(ConfigError) as info:
        harness(template=str(tmp_path / "missing.j2"))
    assert "cannot read template" in info.value.problems[0].message


def test_dry_run_writes_nothing(tmp_path, capsys):
    out = tmp_path / "sub" / "out.jsonl"
    h = SinkHarness.from_type(SINK_TYPE, {"path": str(out), "show_withdrawals": True}, dry_run=True)
    outcomes = h.send(make_indicators(2))
    with h.session():
        h.withdraw(["1"])
    assert [o.status for o in outcomes] == ["accepted", "accepted"]
    assert not out.exists() and not out.parent.exists()
    h2 = SinkHarness.from_type(SINK_TYPE, {}, dry_run=True)
    h2.send(make_indicators(1))
    assert capsys.readouterr().out == ""


def test_path_appends_and_creates_folders(tmp_path):
    out = tmp_path / "a" / "b" / "out.jsonl"
    harness(path=str(out)).send(make_indicators(1))
    harness(path=str(out)).send(make_indicators(1, start=2))
    assert [json.loads(x)["source_id"] for x in out.read_text().splitlines()] == ["1", "2"]


def test_unwritable_path_is_a_sink_error(tmp_path):
    folder = tmp_path / "dir"
    folder.mkdir()
    h = harness(path=str(folder))  # a folder, not a file
    with pytest.raises(SinkError, match="cannot open"):
        h.open()


def test_withdrawals_shown_only_when_asked(tmp_path):
    out = tmp_path / "out.jsonl"
    with harness(path=str(out)).session() as h:
        assert [o.status for o in h.withdraw([Withdrawal("1", "removed")])] == ["accepted"]
    assert not out.exists() or out.read_text() == ""
    with harness(path=str(out), show_withdrawals=True).session() as h:
        h.withdraw([Withdrawal("1", "removed"), make_indicator(source_id="2", status="Expired")])
    assert [json.loads(x) for x in out.read_text().splitlines()] == [
        {"withdrawn": "1", "reason": "removed"},
        {"withdrawn": "2", "reason": "expired"},
    ]
    text = tmp_path / "out.txt"
    with harness(path=str(text), format="text", show_withdrawals=True).session() as h:
        h.withdraw([Withdrawal("3", "expired")])
    assert text.read_text() == "WITHDRAWN 3 (expired)\n"


def test_broken_pipe_stops_the_sink(tmp_path):
    class Closed(io.StringIO):
        def write(self, text):
            raise BrokenPipeError()

    h = harness()
    h.open()
    h.sink._stream = Closed()
    with pytest.raises(SinkError, match="broken pipe"):
        h.write(make_indicators(1))


def test_close_closes_the_file(tmp_path):
    h = harness(path=str(tmp_path / "out.jsonl"))
    h.open()
    stream = h.sink._stream
    h.close(RuntimeError("run failed"))
    assert stream.closed and h.sink._stream is None


def test_settings_problems_listed_together(tmp_path):
    with pytest.raises(ConfigError) as info:
        harness(format="xml", show_withdrawals="yes", pth="-")
    keys = sorted(p.key for p in info.value.problems)
    assert keys == ["sinks.stdout.format", "sinks.stdout.pth", "sinks.stdout.show_withdrawals"]
    assert "did you mean 'path'" in str(info.value)


def test_csv_withdrawals_stay_rows_of_the_same_table(tmp_path):
    import csv as _csv

    from exportkit.results import Withdrawal
    from exportkit.testing import SinkHarness, make_indicators
    from exportkit_stdout import exportkit_sink_types

    out = tmp_path / "out.csv"
    harness = SinkHarness.from_type(exportkit_sink_types()[0], {"format": "csv", "path": str(out), "show_withdrawals": True})
    with harness.session():
        harness.write(make_indicators(2))
        harness.withdraw([Withdrawal("1", "expired")])
    rows = list(_csv.DictReader(out.open()))
    assert len(rows) == 3
    assert rows[2]["source_id"] == "1" and rows[2]["status"] == "withdrawn: expired" and rows[2]["value"] == ""


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_a_torn_last_line_from_a_killed_run_is_dropped_before_appending(tmp_path, fmt):
    """A run killed inside a write leaves half a line; its batch was never recorded, so the next run sends
    it again. Appending after the torn half would glue it to the next record and spoil that line too."""
    out = tmp_path / f"out.{fmt}"
    harness(format=fmt, path=str(out)).send(make_indicators(2))
    whole = out.read_bytes()
    out.write_bytes(whole + whole.splitlines(keepends=True)[-1][:17])  # the killed run got this far into a line
    harness(format=fmt, path=str(out)).send(make_indicators(1, start=3))
    text = out.read_text(encoding="utf-8")
    assert text.startswith(whole.decode("utf-8")) and text.endswith("\n")
    if fmt == "jsonl":
        assert [json.loads(line)["source_id"] for line in text.splitlines()] == ["1", "2", "3"]
    else:
        assert [r[1] for r in read_csv(out)[1:]] == ["1", "2", "3"]


def test_a_file_without_any_complete_line_is_emptied_and_gets_its_header_again(tmp_path):
    out = tmp_path / "out.csv"
    out.write_text("source,sou", encoding="utf-8")  # killed while writing the header
    harness(format="csv", path=str(out)).send(make_indicators(1))
    rows = read_csv(out)
    assert rows[0] == list(CSV_COLUMNS) and [r[1] for r in rows[1:]] == ["1"]
