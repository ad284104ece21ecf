"""Weak or odd configurations, met through the real CLI: said every time, or refused with what to fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from exportkit.config import write_config

from .conftest import file_instance, make_records, write_jsonl

pytestmark = pytest.mark.integration


def tq_instance(folder: Path, **source: object) -> None:
    write_jsonl(folder / "records.jsonl", make_records(1))
    write_config(
        folder / "inst.toml",
        {
            "source": {"host": "tq.example.invalid", "client_id": "c", "username": "u@example.com", "password": "env:TQ_PW", "collection": "X", **source},
            "export": {"sinks": ["stdout"]},
            "sinks": {"stdout": {"path": "out.jsonl"}},
        },
    )


@pytest.mark.parametrize(
    "source, words",
    [({"verify_tls": False}, "source.verify_tls = false"), ({"host": "http://tq.example.invalid"}, "source.host is a plain http:// URL")],
)
def test_weak_transport_settings_are_said_by_check_and_on_every_run(tmp_path, cli, source, words):
    tq_instance(tmp_path, **source)
    checked = cli("check", "-n", "inst", "-c", ".", env={"TQ_PW": "pw-weak"})
    assert f"WARN config: {words}" in checked.stdout
    for _ in range(2):
        ran = cli("run", "-n", "inst", "-c", ".", "-ll", "logs", env={"TQ_PW": "pw-weak"})
        assert f"Warning: {words}" in ran.stderr
    assert (tmp_path / "logs" / "inst.log").read_text().count(words) == 2


def test_ctia_verify_tls_false_is_said_too(tmp_path, cli):
    write_jsonl(tmp_path / "records.jsonl", make_records(1))
    file_instance(tmp_path, "inst", {"ctia": {"client_id": "c", "client_password": "env:CTIA_PW", "verify_tls": False}})
    checked = cli("check", "-n", "inst", "-c", ".", env={"CTIA_PW": "pw-ctia"})
    assert "WARN config: sinks.ctia.verify_tls = false" in checked.stdout


def test_secrets_on_the_command_line_are_warned_about(tmp_path, cli):
    write_jsonl(tmp_path / "records.jsonl", make_records(1))
    literal = cli(
        "configure", "-n", "a", "-c", ".", "--no-verify", "--host", "tq.example.invalid", "--client-id", "c", "--username", "u@example.com",
        "--password", "hunter2-literal", "--collection", "X", "--sink", "ctia",
        "--set", "sinks.ctia.client_id=x", "--set", "sinks.ctia.client_password=s3cret-literal",
    )
    assert "--password puts a secret on the command line" in literal.stderr
    assert "--set sinks.ctia.client_password=... puts a secret on the command line" in literal.stderr
    assert "hunter2-literal" not in literal.stderr and "s3cret-literal" not in literal.stderr
    referenced = cli(
        "configure", "-n", "b", "-c", ".", "--no-verify", "--host", "tq.example.invalid", "--client-id", "c", "--username", "u@example.com",
        "--password", "env:TQ_PW", "--collection", "X", "--sink", "ctia",
        "--set", "sinks.ctia.client_id=x", "--set", "sinks.ctia.client_password=file:/run/secrets/ctia",
    )
    assert "puts a secret on the command line" not in referenced.stderr


def test_an_instance_name_with_a_trailing_newline_is_refused(tmp_path, cli):
    result = cli("configure", "-n", "evil\n", "-c", ".", "--no-verify", "--source-file", "records.jsonl", "--sink", "stdout")
    assert result.returncode == 1
    assert "invalid instance name" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_secret_that_http_cannot_carry_names_only_the_setting(tmp_path, cli):
    write_jsonl(tmp_path / "records.jsonl", make_records(1))
    file_instance(tmp_path, "inst", {"ctia": {"client_id": "c", "client_password": "env:CTIA_PW", "api_url": "http://127.0.0.1:9", "token_url": "http://127.0.0.1:9/t"}})
    secret = "pässwörd-€uro-1234"
    for command in ("check", "run"):
        result = cli(command, "-n", "inst", "-c", ".", env={"CTIA_PW": secret})
        assert result.returncode == 1, result.stderr
        output = result.stdout + result.stderr
        assert "client_password" in output and "Latin-1" in output
        assert "€" not in output and "position" not in output and "Traceback" not in output


def test_a_deeply_nested_toml_file_is_a_clear_error(tmp_path, cli):
    (tmp_path / "inst.toml").write_text("x = " + "[" * 100_000 + "]" * 100_000 + "\n")
    (tmp_path / "inst.toml").chmod(0o600)
    result = cli("run", "-n", "inst", "-c", ".")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and "RecursionError" not in result.stderr
    assert "nested too deeply" in result.stderr
