"""Escaping outside text (indicator values, server error texts) before it reaches a log, a terminal or a spreadsheet.

* :func:`visible` turns control characters into visible escapes: ``\\n``,
  ``\\r``, ``\\t`` and ``\\xNN`` for the other C0 and C1 controls and DEL
  (ESC, BEL, ...), ``\\uNNNN`` for the Unicode bidirectional overrides that
  reorder what a terminal shows. The result is one line that cannot move the
  cursor, change colours, ring the bell or forge a log line.
* :func:`neutralise_formula` puts a ``'`` before a cell that a spreadsheet
  would run as a formula (first character ``=``, ``+``, ``-``, ``@``, tab or
  carriage return), as OWASP recommends for CSV exports.
"""

from __future__ import annotations

import re

__all__ = ["visible", "neutralise_formula", "FORMULA_TRIGGERS"]

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
#: first characters that make a spreadsheet read a cell as a formula
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")


def _escape(match: re.Match[str]) -> str:
    ch = match.group()
    named = _NAMED.get(ch)
    if named:
        return named
    code = ord(ch)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def visible(text: str) -> str:
    """``text`` with every control character written as a visible escape (see the module docstring)."""
    return _UNSAFE.sub(_escape, text) if _UNSAFE.search(text) else text


def neutralise_formula(text: str) -> str:
    """``text`` with a leading ``'`` when a spreadsheet would read it as a formula; otherwise unchanged."""
    return "'" + text if text.startswith(FORMULA_TRIGGERS) else text
