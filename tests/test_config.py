"""Instance config files: every problem at once, unknown sinks, literal secrets, writing."""

from __future__ import annotations

import os
import stat
import sys
from datetime import timedelta

import attrs
import pytest

from exportkit.config import (
    ExportSettings,
    config_path,
    dump_toml,
    list_instances,
    load_instance,
    validate_instance_name,
    write_config,
)
from exportkit.context import SinkType
from exportkit.errors import ConfigError
from exportkit.secrets import Secret
from exportkit.settings import setting
from exportkit.testing import RecordingSettings, recording_sink_type

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@attrs.frozen
class VaultSettings:
    url: str = setting(help="URL.")
    token: Secret = setting(help="Token.")
    priority: int = setting(50, help="Priority.", minimum=0, maximum=100)


def vault_type() -> SinkType:
    return SinkType("vault", VaultSettings, lambda settings: object())


SINK_TYPES = {"recording": recording_sink_type(), "vault": vault_type()}


def write(tmp_path, text: str, name: str = "inst", mode: int = 0o600):
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    os.chmod(path, mode)
    return path


GOOD = """
[source]
type = "file"
path = "records.jsonl"

[export]
sinks = ["recording", "vault"]
batch_size = 10

[sinks.recording]
reject = ["7"]

[sinks.vault]
url = "https://vault.example"
token = "env:VAULT_TOKEN"
"""


def load(tmp_path, **kw):
    kw.setdefault("environ", {"VAULT_TOKEN": "tok-from-env-1"})
    return load_instance(tmp_path, "inst", SINK_TYPES, **kw)


def test_good_config_loads(tmp_path):
    write(tmp_path, GOOD)
    config = load(tmp_path)
    assert config.name == "inst" and config.source_type.name == "file"
    assert config.source.path == "records.jsonl"
    assert config.export.batch_size == 10 and config.export.reconcile_every == timedelta(hours=24)
    assert list(config.sinks) == ["recording", "vault"]
    assert isinstance(config.sinks["recording"], RecordingSettings) and config.sinks["recording"].reject == ["7"]
    assert config.sinks["vault"].token.reveal() == "tok-from-env-1"
    assert config.config_dir == tmp_path


def test_all_problems_across_tables_in_one_error(tmp_path):
    write(
        tmp_path,
        """
[source]
type = "file"
paht = "x.jsonl"

[export]
sinks = ["recording", "vault"]
batch_size = 0
proxy = "proxy:3128"

[sinks.recording]
raise_on = 0

[sinks.vault]
priority = "high"
token = "env:NOT_THERE"
""",
    )
    with pytest.raises(ConfigError) as info:
        load(tmp_path, environ={})
    problems = {(p.key, p.file) for p in info.value.problems}
    file = str(tmp_path / "inst.toml")
    assert problems == {
        ("source.paht", file),
        ("source.path", file),
        ("export.batch_size", file),
        ("export.proxy", file),
        ("sinks.recording.raise_on", file),
        ("sinks.vault.priority", file),
        ("sinks.vault.url", file),
        ("sinks.vault.token", file),
    }
    text = str(info.value)
    assert "8 problems" in text and "NOT_THERE" in text
    assert all(p.message for p in info.value.problems)


def test_unknown_table_is_a_problem(tmp_path):
    write(tmp_path, GOOD + '\n[sink]\nx = 1\n')
    with pytest.raises(ConfigError) as info:
        load(tmp_path)
    (problem,) = info.value.problems
    assert problem.key == "sink" and "unknown table" in problem.message and "sinks" in problem.allowed


def test_unknown_sink_lists_the_installed_ones(tmp_path):
    write(tmp_path, GOOD.replace('sinks = ["recording", "vault"]', 'sinks = ["recordnig"]'))
    with pytest.raises(ConfigError) as info:
        load(tmp_path)
    (problem,) = info.value.problems
    assert problem.key == "export.sinks" and "recordnig" in problem.message
    assert problem.allowed == "recording, vault"


def test_sink_whose_plugin_failed_says_why(tmp_path):
    write(tmp_path, GOOD.replace('sinks = ["recording", "vault"]', 'sinks = ["ctia"]'))
    with pytest.raises(ConfigError) as info:
        load(tmp_path, unavailable_sinks={"ctia": "failed to load: ImportError: no module named requests"})
    assert "failed to load: ImportError" in info.value.problems[0].message


def test_empty_sink_list_is_a_problem(tmp_path):
    write(tmp_path, GOOD.replace('sinks = ["recording", "vault"]', "sinks = []"))
    with pytest.raises(ConfigError) as info:
        load(tmp_path)
    assert [p.key for p in info.value.problems] == ["export.sinks"]


def test_not_a_table_and_bad_toml(tmp_path):
    write(tmp_path, 'source = 5\n[export]\nsinks = ["recording"]\n')
    with pytest.raises(ConfigError) as info:
        load(tmp_path)
    assert any(p.key == "source" and "table" in p.message for p in info.value.problems)
    write(tmp_path, "[export\nsinks = 1\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load(tmp_path)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        load(tmp_path)


LITERAL = GOOD.replace('token = "env:VAULT_TOKEN"', 'token = "literal-token-123456"')


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644])
def test_literal_secret_in_a_readable_file_is_refused_with_chmod_hint(tmp_path, mode):
    path = write(tmp_path, LITERAL, mode=mode)
    with pytest.raises(ConfigError) as info:
        load(tmp_path)
    (problem,) = info.value.problems
    assert f"chmod 600 {path}" in problem.message and "token" in problem.key
    assert "literal-token-123456" not in str(info.value)


def test_literal_secret_in_a_private_file_passes(tmp_path):
    write(tmp_path, LITERAL, mode=0o600)
    assert load(tmp_path).sinks["vault"].token.reveal() == "literal-token-123456"


def test_references_in_a_readable_file_pass(tmp_path):
    write(tmp_path, GOOD, mode=0o644)
    assert load(tmp_path).sinks["vault"].token.source == "env:VAULT_TOKEN"


def test_instance_names(tmp_path):
    assert validate_instance_name("prod-1.a_b") == "prod-1.a_b"
    for bad in ("", "../etc", "a/b", "-x", "x" * 65):
        with pytest.raises(ConfigError):
            validate_instance_name(bad)
    assert config_path(tmp_path, "prod") == tmp_path / "prod.toml"
    write(tmp_path, GOOD, name="b")
    write(tmp_path, GOOD, name="a")
    (tmp_path / "notes.txt").write_text("")
    assert list_instances(tmp_path) == ["a", "b"]
    assert list_instances(tmp_path / "missing") == []


DATA = {
    "source": {"type": "file", "path": "C:\\data\\records.jsonl", "verify_tls": True, "page_size": 500, "skip": None},
    "export": {"sinks": ["recording", "vault"], "batch_size": 1000, "reconcile_every": timedelta(hours=24), "ratio": 0.25},
    "sinks": {
        "vault": {"url": "https://vault.example", "note": 'quote " backslash \\ tab\t newline\n unicode ☃ é'},
        "odd name": {"x": "y"},
    },
}


def test_dump_toml_round_trips_through_tomllib():
    text = dump_toml(DATA)
    parsed = tomllib.loads(text)
    expected = {
        "source": {"type": "file", "path": "C:\\data\\records.jsonl", "verify_tls": True, "page_size": 500},
        "export": {"sinks": ["recording", "vault"], "batch_size": 1000, "reconcile_every": "86400s", "ratio": 0.25},
        "sinks": DATA["sinks"],
    }
    assert parsed == expected
    assert text.index("[source]") < text.index("[export]") < text.index("[sinks.vault]")


def test_dump_toml_escapes_control_characters():
    value = "a\rb\x00c\x1fd\x7fe\bf\x0cg"
    assert tomllib.loads(dump_toml({"t": {"v": value}})) == {"t": {"v": value}}


def test_write_config_is_private_and_atomic(tmp_path):
    path = tmp_path / "sub" / "inst.toml"
    write_config(path, DATA)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert tomllib.loads(path.read_text())["export"]["batch_size"] == 1000
    # Overwriting an existing, world-readable file leaves it private too, and no temp file behind.
    os.chmod(path, 0o644)
    write_config(path, {"export": {"sinks": ["vault"]}})
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert tomllib.loads(path.read_text()) == {"export": {"sinks": ["vault"]}}
    assert sorted(p.name for p in path.parent.iterdir()) == ["inst.toml"]


def test_written_config_loads_back(tmp_path):
    write_config(
        tmp_path / "inst.toml",
        {
            "source": {"type": "file", "path": "r.jsonl"},
            "export": {"sinks": ["vault"], "reconcile_every": timedelta(hours=2)},
            "sinks": {"vault": {"url": "https://v", "token": "literal-secret-xyz"}},
        },
    )
    config = load_instance(tmp_path, "inst", SINK_TYPES, environ={})
    assert config.export.reconcile_every == timedelta(hours=2)
    assert config.sinks["vault"].token.reveal() == "literal-secret-xyz"


def test_export_settings_reference_is_complete():
    from exportkit.settings import describe

    keys = [row.key for row in describe(ExportSettings)]
    assert keys == ["sinks", "plugins", "batch_size", "reconcile_every", "overlap", "proxy", "run_deadline", "keep_reports", "metrics_file", "verify_sample"]


def test_failed_write_leaves_the_old_file_and_no_temp_file(tmp_path, monkeypatch):
    import exportkit.config as config_module

    path = write_config(tmp_path / "inst.toml", {"export": {"sinks": ["vault"]}})
    before = path.read_text()

    def broken(data):
        raise ValueError("cannot serialise")

    monkeypatch.setattr(config_module, "dump_toml", broken)
    with pytest.raises(ValueError):
        write_config(path, {"export": {"sinks": ["other"]}})
    assert path.read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inst.toml"]


def test_a_misspelt_table_gets_a_did_you_mean(tmp_path):
    (tmp_path / "inst.toml").write_text('[source]\ntype = "file"\npath = "x"\n[export]\nsinks = []\n[sink.ctia]\nclient_id = "x"\n')
    os.chmod(tmp_path / "inst.toml", 0o600)
    with pytest.raises(ConfigError) as info:
        load_instance(tmp_path, "inst", {})
    assert "sink: unknown table; did you mean 'sinks'?" in str(info.value)
