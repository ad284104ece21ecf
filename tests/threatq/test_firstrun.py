"""The interactive first-run setup: prompt order and shapes, and verification against the emulator."""

from __future__ import annotations

from typing import Any

import click
import pytest
from click.testing import CliRunner

from exportkit.errors import ConfigError, SourceAuthError, SourceError
from exportkit.threatq.firstrun import prompt_source_table, verify_source_table
from exportkit.threatq.source import ThreatQSettings
from exportkit.settings import parse_settings


def test_prompts_are_asked_in_order_with_hidden_password_and_status_default() -> None:
    asked: list[tuple[str, dict[str, Any]]] = []
    answers = iter(["tq.example.com ", "cid", "analyst@example.com", " pass word ", "Review", "CTR Export"])

    def fake_prompt(text: str, **kwargs: Any) -> str:
        asked.append((text, kwargs))
        return next(answers)

    table = prompt_source_table(prompt=fake_prompt)
    assert [t for t, _ in asked] == ["ThreatQ Host", "ThreatQ Client ID", "ThreatQ Username", "ThreatQ Password", "Status", "Data Collection"]
    assert asked[3][1] == {"hide_input": True}
    assert asked[4][1] == {"default": "Review"}
    assert table == {"type": "threatq", "host": "tq.example.com", "client_id": "cid", "username": "analyst@example.com",
                     "password": " pass word ", "status": "Review", "collection": "CTR Export"}
    settings, problems = parse_settings(ThreatQSettings, table, file="x", section="source")
    assert problems == [] and settings is not None  # the table is a valid [source] table


def test_prompts_through_click_with_typed_input() -> None:
    @click.command()
    def configure() -> None:
        click.echo(repr(sorted(prompt_source_table().items())))

    result = CliRunner().invoke(configure, input="tq.example.com\ncid\na@example.com\nsecret-pw\n\nHigh Score\n")
    assert result.exit_code == 0, result.output
    assert "ThreatQ Password: \n" in result.output  # hidden: the typed password is not echoed
    assert "Status [Review]: " in result.output
    assert "('status', 'Review')" in result.output and "('collection', 'High Score')" in result.output
    assert result.output.count("secret-pw") == 1  # only in the returned table this test prints


@pytest.mark.integration
def test_verify_succeeds_against_the_emulator(tq, tmp_path) -> None:
    c = tq.credentials
    table = {"host": tq.url, "client_id": c.client_id, "username": c.username, "password": c.password, "status": "Review",
             "collection": "High Score"}
    message = verify_source_table(table, config_dir=tmp_path)
    assert "\n" not in message
    assert c.username in message and "'High Score'" in message
    assert f"{len(tq.collection_ids('High Score'))} indicators" in message
    assert list(tmp_path.iterdir()) == []  # nothing written


@pytest.mark.integration
def test_verify_reports_bad_credentials_and_unknown_collections(tq, tmp_path) -> None:
    c = tq.credentials
    table = {"host": tq.url, "client_id": c.client_id, "username": c.username, "password": "wrong-pass-1", "collection": "High Score"}
    with pytest.raises(SourceAuthError) as info:
        verify_source_table(table, config_dir=tmp_path)
    assert "wrong-pass-1" not in str(info.value)
    table.update(password=c.password, collection="Missing")
    with pytest.raises(SourceError, match="existing collections: .*'CTR Export'"):
        verify_source_table(table, config_dir=tmp_path)


def test_verify_refuses_an_invalid_table(tmp_path) -> None:
    with pytest.raises(ConfigError) as info:
        verify_source_table({"host": "", "client_id": "c", "collection": "C"}, config_dir=tmp_path)
    assert "source.host: the ThreatQ host is empty" in str(info.value)
    with pytest.raises(ConfigError, match="source.password: is required for the password grant"):
        verify_source_table({"host": "tq.example.com", "client_id": "c", "username": "u", "collection": "C"}, config_dir=tmp_path)
