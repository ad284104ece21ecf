"""``exportkit demo`` through the real CLI: what a new operator sees first."""

from __future__ import annotations

import re

import pytest

pytestmark = pytest.mark.integration


def test_demo_explains_itself(cli):
    result = cli("demo", "--dir", "demo")  # the default seed holds malformed indicators
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "Traceback" not in out + result.stderr
    first = out.split("Second run:", 1)[0]
    assert "PARTIAL" in first  # the seeded data holds bad indicators on purpose
    assert "PARTIAL is expected here" in first and "dlq show" in first
    summaries = [line for line in out.splitlines() if line.startswith("    judgements:")]
    assert summaries and not any("{" in line for line in summaries), "no Python dicts in the summary"
    second = out.split("Second run:", 1)[1]
    assert re.search(r"source: \d+ records? pulled", second)
    assert "1 records" not in out
