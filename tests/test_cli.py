"""The CLI layer with click's CliRunner: options, messages, exit codes (file source, stdout sink)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from exportkit.cli import cli
from exportkit.cli.common import HistoricalWindow
from exportkit.config import write_config
from exportkit.testing import make_indicators


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    with open(tmp_path / "records.jsonl", "w") as fh:
        for record in make_indicators(12):
            fh.write(json.dumps(record.to_dict()) + "\n")
    write_config(tmp_path / "one.toml", {
        "source": {"type": "file", "path": "records.jsonl"},
        "export": {"sinks": ["stdout"]},
        "sinks": {"stdout": {"path": str(tmp_path / "out.jsonl")}},
    })
    return tmp_path


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_plugins_lists_the_installed_sinks():
    result = invoke("plugins", "--json")
    data = json.loads(result.output)
    names = {p["name"]: p for p in data["loaded"]}
    assert names["stdout"]["distribution"] == "exportkit-stdout"
    assert "exportkit_sink_types" in names["stdout"]["hooks"]
    assert "ctia" in names and names["ctia"]["sinks"] == ["ctia"]


def test_check_passes_for_a_good_instance_and_names_the_failing_part(folder):
    ok = invoke("check", "-c", str(folder))
    assert ok.exit_code == 0, ok.output
    assert "ok   source: file" in ok.output and "ok   sink stdout" in ok.output
    (folder / "records.jsonl").unlink()
    bad = invoke("check", "-c", str(folder), "-n", "one")
    assert bad.exit_code == 1
    assert "FAIL source" in bad.output and "does not exist" in bad.output


def test_run_picks_the_only_instance_and_instances_shows_it(folder):
    result = invoke("run", "-c", str(folder))
    assert result.exit_code == 0, result.output
    assert len((folder / "out.jsonl").read_text().splitlines()) == 12
    listed = invoke("instances", "-c", str(folder))
    assert listed.output.startswith("one: last run ") and "-> ok" in listed.output


def test_several_instances_need_a_name(folder):
    write_config(folder / "two.toml", {"source": {"type": "file", "path": "records.jsonl"}, "export": {"sinks": ["stdout"]}})
    result = CliRunner().invoke(cli, ["run", "-c", str(folder)])
    assert result.exit_code == 2 and "choose one with -n" in result.output


def test_state_reset_forgets_and_the_next_run_sends_again(folder):
    invoke("run", "-c", str(folder))
    shown = invoke("state", "show", "-c", str(folder))
    assert "holds: stdout: 12 records" in shown.output
    assert invoke("state", "reset", "-c", str(folder), "--yes").exit_code == 0
    assert "checkpoint: none" in invoke("state", "show", "-c", str(folder)).output
    invoke("run", "-c", str(folder))
    assert len((folder / "out.jsonl").read_text().splitlines()) == 24


def test_bad_option_values_are_usage_errors(folder):
    result = CliRunner().invoke(cli, ["run", "-c", str(folder), "-v", "7"])
    assert result.exit_code == 2
    result = CliRunner().invoke(cli, ["run", "-c", str(folder), "-hist", "yesterday"])
    assert result.exit_code == 2 and "use e.g. 2024-01-01..2024-02-01 or 30d" in result.output


def test_historical_window_forms():
    window = HistoricalWindow()
    start, end = window.convert("2024-01-01..2024-02-01", None, None)
    assert start == datetime(2024, 1, 1, tzinfo=timezone.utc) and end == datetime(2024, 2, 1, tzinfo=timezone.utc)
    start, end = window.convert("30d", None, None)
    assert end is None and abs((datetime.now(timezone.utc) - start) - timedelta(days=30)) < timedelta(minutes=1)
    with pytest.raises(click.BadParameter):
        window.convert("2024-02-01..2024-01-01", None, None)


def test_dlq_show_and_clear(folder):
    with open(folder / "records.jsonl", "a") as fh:
        fh.write("{broken\n")
    assert invoke("run", "-c", str(folder)).exit_code == 3
    shown = invoke("dlq", "show", "-c", str(folder))
    assert "(source)" in shown.output and "not JSON" in shown.output
    cleared = invoke("dlq", "clear", "-c", str(folder), "--yes")
    assert "dropped 1 dead letters" in cleared.output
    assert "no dead letters" in invoke("dlq", "show", "-c", str(folder)).output


def test_a_disabled_plugin_is_reported_as_disabled_not_missing(folder, monkeypatch):
    monkeypatch.setenv("EXPORTKIT_DISABLE_PLUGINS", "stdout")
    checked = invoke("check", "-c", str(folder), "-n", "one")
    assert checked.exit_code == 1
    assert "sink type 'stdout' is disabled by EXPORTKIT_DISABLE_PLUGINS" in checked.output
    assert "no installed plugin" not in checked.output
    listed = invoke("plugins")
    assert "stdout  exportkit-stdout 0.1.0  disabled by EXPORTKIT_DISABLE_PLUGINS" in listed.output
    assert listed.exit_code == 0  # disabling on purpose is not a failure
    data = json.loads(invoke("plugins", "--json").output)
    assert [d["name"] for d in data["disabled"]] == ["stdout"]
    assert "stdout" not in {p["name"] for p in data["loaded"]}


def test_configure_writes_toml_with_a_final_newline(tmp_path):
    result = CliRunner().invoke(
        cli, ["configure", "-c", str(tmp_path), "-n", "fresh", "--source-file", "records.jsonl", "--sink", "stdout", "--no-verify"]
    )
    assert result.exit_code == 0, result.output
    text = (tmp_path / "fresh.toml").read_text(encoding="utf-8")
    assert text.endswith("\n") and not text.endswith("\n\n")
    assert '[sinks.stdout]' in text or "[export]" in text


def test_plugins_lists_the_hooks_each_sink_implements():
    data = json.loads(invoke("plugins", "--json").output)
    stdout = next(p for p in data["loaded"] if p["name"] == "stdout")
    assert stdout["sink_hooks"]["stdout"] == ["exportkit_close", "exportkit_open", "exportkit_withdraw", "exportkit_write"]


def test_connector_command_takes_exactly_the_connectors_flags():
    from exportkit.connector_cli import DEFAULT_INSTANCE, command

    flags = {opt for param in command.params for opt in param.opts}
    assert {"-ll", "-c", "-v", "-ep", "-n", "-hist"} <= flags
    assert flags - {"-ll", "-c", "-v", "-ep", "-n", "-hist"} == {
        "--loglocation", "--config", "--verbosity", "--external-proxy", "--name", "--historical", "--version"
    }
    assert DEFAULT_INSTANCE == "tq-conn-ctr-exporter"
    result = CliRunner().invoke(command, ["-v", "9"])
    assert result.exit_code == 2


def test_an_unknown_sink_name_is_a_usage_error_not_a_silent_success(folder):
    assert invoke("run", "-c", str(folder)).exit_code == 0
    for command in (("state", "reset", "--yes"), ("dlq", "clear", "--yes"), ("dlq", "show")):
        result = CliRunner().invoke(cli, [*command, "-c", str(folder), "--sink", "nosuch"])
        assert result.exit_code == 2, (command, result.output)
        assert "no sink 'nosuch'" in result.output and "stdout" in result.output


def test_instances_in_a_missing_folder_says_so(tmp_path):
    result = CliRunner().invoke(cli, ["instances", "-c", str(tmp_path / "nonexistent")])
    assert result.exit_code == 1
    assert "does not exist" in result.output and "no instances" not in result.output


def test_state_show_never_prints_exit_none(folder):
    from exportkit.state import State, state_path

    assert invoke("run", "-c", str(folder)).exit_code == 0
    with State.open(state_path(folder, "one")) as st:  # a run that never finished (killed)
        st.start_run("deadbeef0000", "incremental")
    shown = invoke("state", "show", "-c", str(folder)).output
    assert "exit None" not in shown
    assert "deadbeef0000" in shown and "interrupted" in shown
    assert "exit 0" in shown


def test_dlq_show_says_when_it_shows_only_part(folder):
    (folder / "records.jsonl").write_text("".join(f"not json {i}\n" for i in range(60)))
    invoke("run", "-c", str(folder))
    shown = invoke("dlq", "show", "-c", str(folder))
    assert len([line for line in shown.output.splitlines() if line.startswith("#")]) == 50
    assert "50 of 60" in shown.output and "--all" in shown.output
    everything = invoke("dlq", "show", "-c", str(folder), "--all")
    assert len([line for line in everything.output.splitlines() if line.startswith("#")]) == 60
    assert " of " not in everything.output


def test_emulator_commands_take_dash_h():
    for which in ("threatq", "ctia"):
        result = CliRunner().invoke(cli, ["emulate", which, "-h"])
        assert result.exit_code == 0 and "Usage:" in result.output


@pytest.mark.parametrize("extra", [("--json",), ("-ll", "stdout")])
def test_two_writers_on_standard_output_are_refused(folder, extra):
    write_config(folder / "one.toml", {
        "source": {"type": "file", "path": "records.jsonl"},
        "export": {"sinks": ["stdout"]},
        "sinks": {"stdout": {"path": "-"}},
    })
    result = CliRunner().invoke(cli, ["run", "-c", str(folder), *extra])
    assert result.exit_code == 2, result.output
    assert "would all write to standard output" in result.output
    assert "sink stdout" in result.output


def test_one_writer_on_standard_output_is_fine(folder):
    result = CliRunner().invoke(cli, ["run", "-c", str(folder), "--json"])  # the sink writes to a file
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["sinks"]["stdout"]["accepted"] == 12


def test_json_output_of_instances_state_show_and_check(folder):
    assert invoke("run", "-c", str(folder)).exit_code == 0
    listed = json.loads(invoke("instances", "-c", str(folder), "--json").output)
    assert [row["name"] for row in listed] == ["one"]
    assert listed[0]["last_run"]["exit_code"] == 0 and listed[0]["last_run"]["outcome"] == "ok"
    shown = json.loads(invoke("state", "show", "-c", str(folder), "--json").output)
    assert shown["holdings"] == {"stdout": 12} and shown["checkpoint"]["source_id"]
    assert shown["runs"][0]["summary"]["sinks"]["stdout"]["accepted"] == 12  # the run history keeps the counts
    checked = CliRunner().invoke(cli, ["check", "-c", str(folder), "--json"])
    data = json.loads(checked.stdout)
    assert checked.exit_code == 0 and data["ok"] is True
    assert {c["part"] for c in data["checks"]} >= {"config", "source", "sink stdout"}
    (folder / "records.jsonl").unlink()
    failing = CliRunner().invoke(cli, ["check", "-c", str(folder), "--json"])
    assert failing.exit_code == 1 and json.loads(failing.stdout)["ok"] is False
