"""Declared settings: parsing with every problem at once, secrets, durations, describe()."""

from __future__ import annotations

from datetime import timedelta

import attrs
import pytest

from exportkit.secrets import Secret
from exportkit.settings import Problem, describe, parse_duration, parse_settings, secret_keys, setting


@attrs.frozen
class Demo:
    url: str = setting(help="Where to send.", example="https://x")
    password: Secret = setting(help="The password.")
    priority: int = setting(50, help="Priority.", minimum=0, maximum=100)
    ratio: float = setting(0.5, help="Ratio.", minimum=0)
    verbose: bool = setting(False, help="Talk more.")
    region: str = setting("us", help="Region.", choices=("us", "eu", "apjc"))
    tags: list[str] = setting([], help="Tags.")
    every: timedelta = setting(timedelta(hours=24), help="How often.")
    proxy: str | None = setting(None, help="Proxy.", check=lambda v: None if v.startswith("http") else "must be a URL")
    low: int = setting(1, help="Lower bound.")
    high: int = setting(2, help="Upper bound.")

    def check(self):
        if self.low > self.high:
            yield "low", f"must not be above high ({self.high})"


GOOD = {"url": "https://example.com", "password": "hunter22"}


def parse(raw, **kw):
    return parse_settings(Demo, raw, file="demo.toml", section="sinks.demo", **kw)


def test_good_settings_parse_with_defaults():
    settings, problems = parse(GOOD)
    assert problems == []
    assert settings.url == "https://example.com" and settings.priority == 50 and settings.every == timedelta(hours=24)
    assert settings.password.reveal() == "hunter22"


def test_every_problem_is_listed_at_once():
    raw = {"pasword": "x", "priority": 101, "ratio": "high", "verbose": "yes", "region": "mars", "tags": [1], "proxy": "ftp"}
    settings, problems = parse(raw)
    assert settings is None
    by_key = {p.key: p for p in problems}
    assert set(by_key) == {
        "sinks.demo.pasword",
        "sinks.demo.url",
        "sinks.demo.password",
        "sinks.demo.priority",
        "sinks.demo.ratio",
        "sinks.demo.verbose",
        "sinks.demo.region",
        "sinks.demo.tags",
        "sinks.demo.proxy",
    }
    assert all(p.file == "demo.toml" for p in problems)
    assert "did you mean 'password'" in by_key["sinks.demo.pasword"].message
    # The example is an example, not the only value allowed.
    assert by_key["sinks.demo.url"].message == "is required but missing; for example https://x"
    assert by_key["sinks.demo.url"].allowed == "string"
    assert "above the maximum" in by_key["sinks.demo.priority"].message and by_key["sinks.demo.priority"].allowed == "0..100"
    assert "number" in by_key["sinks.demo.ratio"].message
    assert "true or false" in by_key["sinks.demo.verbose"].message
    assert by_key["sinks.demo.region"].allowed == "us, eu, apjc"
    assert "list of strings" in by_key["sinks.demo.tags"].message
    assert by_key["sinks.demo.proxy"].message == "must be a URL"


def test_unknown_key_without_a_close_match_lists_the_keys():
    _, problems = parse({**GOOD, "zzzzzz": 1})
    (problem,) = problems
    assert "did you mean" not in problem.message
    assert "priority" in problem.allowed


def test_below_minimum():
    _, problems = parse({**GOOD, "ratio": -1})
    assert problems[0].key == "sinks.demo.ratio" and "below the minimum" in problems[0].message


def test_cross_field_check_runs_on_otherwise_good_settings():
    settings, problems = parse({**GOOD, "low": 5, "high": 3})
    assert settings is None
    assert problems == [Problem("demo.toml", "sinks.demo.low", "must not be above high (3)")]


def test_cross_field_checks_run_when_a_single_key_is_invalid():
    # Every problem at once: a bad `priority` must not hide the low/high rule.
    settings, problems = parse({**GOOD, "priority": 500, "low": 5, "high": 3})
    assert settings is None
    assert [p.key for p in problems] == ["sinks.demo.priority", "sinks.demo.low"]


def test_cross_field_checks_run_when_a_required_key_is_missing():
    settings, problems = parse({"password": "x", "low": 5, "high": 3})
    assert [p.key for p in problems] == ["sinks.demo.url", "sinks.demo.low"]


def test_a_rule_that_reads_an_invalid_key_is_left_out():
    # The rule compares with `high`, which is already reported; it must not fire
    # on a stand-in value, nor crash the parse.
    settings, problems = parse({**GOOD, "low": 5, "high": "many"})
    assert [p.key for p in problems] == ["sinks.demo.high"]


@attrs.frozen
class Strings:
    name: str = setting(help="A name.")
    other: str = setting("b", help="Another name.")
    size: int = setting(1, help="A size.", minimum=1)

    def check(self):
        if self.name.casefold() == self.other.casefold():
            yield "other", "must differ from name"
        if self.size > 10 and len(self.other) < 2:
            yield "size", "too big for a short name"


def test_rules_after_one_that_reads_an_invalid_key_still_run():
    _, problems = parse_settings(Strings, {"name": 5, "other": "x", "size": 11}, file="f", section="s")
    assert [p.key for p in problems] == ["s.name", "s.size"]


def test_choices_match_case_insensitively_and_keep_the_declared_spelling():
    settings, problems = parse({**GOOD, "region": "EU"})
    assert problems == []
    assert settings.region == "eu"


def test_int_and_bool_are_not_confused():
    _, problems = parse({**GOOD, "priority": True})
    assert problems and "whole number" in problems[0].message
    settings, _ = parse({**GOOD, "priority": "7"})
    assert settings.priority == 7


def test_single_string_for_a_list_becomes_a_list():
    settings, _ = parse({**GOOD, "tags": "one"})
    assert settings.tags == ["one"]


def test_list_default_is_not_shared():
    a, _ = parse(GOOD)
    b, _ = parse(GOOD)
    a.tags.append("x")
    assert b.tags == []


def test_optional_accepts_empty_string_as_none():
    settings, problems = parse({**GOOD, "proxy": ""})
    assert problems == [] and settings.proxy is None


# --- secrets -------------------------------------------------------------------------


def test_secret_from_env(monkeypatch):
    settings, problems = parse({**GOOD, "password": "env:DEMO_PW"}, environ={"DEMO_PW": "s3cr3t-value"})
    assert problems == []
    assert settings.password.reveal() == "s3cr3t-value" and settings.password.source == "env:DEMO_PW"
    assert "s3cr3t-value" not in repr(settings)


def test_missing_env_var_is_a_problem_naming_the_variable_only():
    _, problems = parse({**GOOD, "password": "env:NOT_SET_ANYWHERE"}, environ={"OTHER": "leaky-value"})
    (problem,) = problems
    assert problem.key == "sinks.demo.password"
    assert "NOT_SET_ANYWHERE" in problem.message
    assert "leaky-value" not in str(problem)


def test_secret_from_file_relative_to_base_dir(tmp_path):
    (tmp_path / "pw.txt").write_text("  from-a-file\n")
    settings, problems = parse({**GOOD, "password": "file:pw.txt"}, base_dir=tmp_path)
    assert problems == [] and settings.password.reveal() == "from-a-file"


def test_unreadable_secret_file_is_a_problem(tmp_path):
    _, problems = parse({**GOOD, "password": "file:missing.txt"}, base_dir=tmp_path)
    assert problems[0].key == "sinks.demo.password" and "missing.txt" in problems[0].message


def test_secret_must_be_a_string():
    _, problems = parse({**GOOD, "password": 1234})
    assert problems[0].key == "sinks.demo.password"


# --- durations -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("30m", 1800), ("24h", 86400), ("7d", 604800), ("2w", 1209600), ("1.5h", 5400), ("45", 45), (45, 45), (0, 0), ("10 minutes", 600), ("1 hour", 3600)],
)
def test_parse_duration(text, seconds):
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("bad", ["soon", "5y", "-1h", "h", True])
def test_parse_duration_refuses(bad):
    with pytest.raises(ValueError):
        parse_duration(bad)


def test_bad_duration_is_a_problem():
    _, problems = parse({**GOOD, "every": "often"})
    assert problems[0].key == "sinks.demo.every" and "duration" in problems[0].message


# --- describe -------------------------------------------------------------------------


def test_number_bounds_are_shown_as_written():
    @attrs.frozen
    class Big:
        limit: int = setting(5, help="A limit.", minimum=1, maximum=1_000_000)
        ratio: float = setting(0.5, help="A ratio.", minimum=0.25)

    _, problems = parse_settings(Big, {"limit": 2_000_000, "ratio": 0.1}, file="f", section="s")
    assert [p.allowed for p in problems] == ["1..1000000", ">= 0.25"]


def test_describe_lists_keys_in_order_with_types_defaults_and_secrets():
    rows = {r.key: r for r in describe(Demo)}
    assert list(rows)[:3] == ["url", "password", "priority"]
    assert rows["url"].default == "required" and rows["url"].type == "string"
    assert rows["password"].secret and not rows["url"].secret
    assert rows["priority"].default == "50" and rows["priority"].type == "integer"
    assert rows["tags"].default == "[]" and rows["tags"].type == "list of strings"
    assert rows["every"].default == "86400s" and rows["every"].type == "duration"
    assert rows["proxy"].default == "none" and rows["proxy"].type == "string (optional)"
    assert rows["region"].choices == ("us", "eu", "apjc")
    assert rows["verbose"].help == "Talk more."
    assert secret_keys(Demo) == ["password"]


def test_problem_str_names_file_key_and_allowed():
    assert str(Problem("a.toml", "export.x", "is bad", "1, 2")) == "a.toml: export.x: is bad (allowed: 1, 2)"
    assert str(Problem("a.toml", "export.x", "is bad")) == "a.toml: export.x: is bad"


@attrs.frozen
class WithProperty:
    mode: str = setting("a", help="Mode.", choices=("a", "b"))
    user: str | None = setting(None, help="User.")
    size: int = setting(1, help="Size.", minimum=1)

    @property
    def needs_user(self) -> bool:
        return self.mode == "b"

    def check(self):
        if self.needs_user and not self.user:
            yield "user", "is required in mode b"
        if self.size > 5:
            yield "size", "must be at most 5 (cross rule)"


def test_a_property_that_reads_an_invalid_key_taints_its_rule_only():
    _, problems = parse_settings(WithProperty, {"mode": "zz", "size": 9}, file="f", section="s")
    assert [(p.key, p.message) for p in problems] == [("s.mode", "'zz' is not allowed"), ("s.size", "must be at most 5 (cross rule)")]
    _, problems = parse_settings(WithProperty, {"mode": "b", "size": "x"}, file="f", section="s")
    assert [p.key for p in problems] == ["s.size", "s.user"]
