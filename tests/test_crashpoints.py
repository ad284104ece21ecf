"""Crash points end the process hard at the n-th passage of the named point, and only then."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from exportkit.crashpoints import CRASH_EXIT_CODE, ENV, parse_crash_at

PROGRAM = textwrap.dedent(
    """
    import sys
    from exportkit.crashpoints import crash_point
    try:
        for i in range(1, 4):
            crash_point("bundle-answered")
            print("passed", i, flush=True)
    finally:
        print("finally ran", flush=True)
    """
)


def run(env_value: str | None) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin"}
    if env_value is not None:
        env[ENV] = env_value
    return subprocess.run([sys.executable, "-c", PROGRAM], env=env, capture_output=True, text=True, timeout=30)


def test_parse():
    assert parse_crash_at(None) is None
    assert parse_crash_at(" ") is None
    assert parse_crash_at("judgement-expired") == ("judgement-expired", 1)
    assert parse_crash_at("judgement-expired:3") == ("judgement-expired", 3)
    with pytest.raises(ValueError):
        parse_crash_at("judgement-expired:0")


def test_without_the_variable_nothing_happens():
    result = run(None)
    assert result.returncode == 0
    assert result.stdout.split("\n")[:4] == ["passed 1", "passed 2", "passed 3", "finally ran"]


def test_another_point_is_not_this_one():
    assert run("judgement-expired").returncode == 0


def test_exits_hard_at_the_nth_passage_without_finally_blocks():
    result = run("bundle-answered:2")
    assert result.returncode == CRASH_EXIT_CODE
    assert result.stdout.splitlines() == ["passed 1"], "no finally block runs, as with SIGKILL"
    assert "crash point bundle-answered:2 reached" in result.stderr


def test_first_passage_by_default():
    result = run("bundle-answered")
    assert result.returncode == CRASH_EXIT_CODE
    assert result.stdout == ""
