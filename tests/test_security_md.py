"""SECURITY.md stays true: every test it cites exists, and every promise cites one."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEXT = (ROOT / "SECURITY.md").read_text(encoding="utf-8")
CITED = re.compile(r"`((?:tests|plugins|examples)/[\w/.-]+\.py)(?:::(\w+))?`")


def test_every_cited_test_exists():
    cited = CITED.findall(TEXT)
    assert len(cited) > 30
    last_file = None
    for path, name in cited:
        source = (ROOT / path).read_text(encoding="utf-8")
        last_file = path
        if name:
            assert re.search(rf"^def {name}\(", source, re.M), f"SECURITY.md cites {path}::{name}, which does not exist"
    assert last_file is not None


def test_cited_names_after_the_first_of_a_cell_exist_in_that_file():
    # "`tests/x.py::a`, `::b`" cites b in tests/x.py too: the file named last before it.
    token = re.compile(r"`((?:tests|plugins|examples)/[\w/.-]+\.py)(?:::\w+)?`|`::(\w+)`")
    for line in TEXT.splitlines():
        current = None
        for path, name in token.findall(line):
            if path:
                current = path
                continue
            assert current, line
            source = (ROOT / current).read_text(encoding="utf-8")
            assert re.search(rf"^def {name}\(", source, re.M), f"SECURITY.md cites ::{name} in {current}"


def test_every_promise_row_cites_a_test():
    in_table = False
    for line in TEXT.split("## Promises and their tests", 1)[1].splitlines():
        if line.startswith("| Promise"):
            in_table = True
            continue
        if in_table and line.startswith("|---"):
            continue
        if in_table and line.startswith("| "):
            assert "`tests/" in line, f"a promise without a test: {line[:80]}"
        else:
            in_table = False
