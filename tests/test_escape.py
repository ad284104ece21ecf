"""Escaping outside text: visible control characters, neutralised spreadsheet formulas."""

from __future__ import annotations

import pytest

from exportkit.escape import neutralise_formula, visible


@pytest.mark.parametrize(
    "raw, shown",
    [
        ("plain text, ünïcödé", "plain text, ünïcödé"),
        ("a\nb\rc\td", "a\\nb\\rc\\td"),
        ("\x1b[31mred\x07", "\\x1b[31mred\\x07"),
        ("nul\x00 del\x7f c1\x9b", "nul\\x00 del\\x7f c1\\x9b"),
        ("abc\u202edcba", "abc\\u202edcba"),
    ],
)
def test_visible_escapes_every_control_character(raw, shown):
    assert visible(raw) == shown
    assert "\n" not in visible(raw) and "\x1b" not in visible(raw)


@pytest.mark.parametrize("cell", ["=1+1", "+1", "-1", "@SUM(A1)", "\tx", "\rx"])
def test_formula_cells_get_a_leading_quote(cell):
    assert neutralise_formula(cell) == "'" + cell


@pytest.mark.parametrize("cell", ["evil.example.com", "203.0.113.1", "", "a=b", "'quoted"])
def test_other_cells_stay_as_they_are(cell):
    assert neutralise_formula(cell) == cell
