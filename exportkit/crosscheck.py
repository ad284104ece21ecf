"""Run a settings class's cross-key ``check()`` rules even when single keys are invalid.

"Every problem at once" means a bad ``priority`` must not hide a rule about
``low`` and ``high``. So when keys are invalid or missing, ``check()`` still
runs, on an instance where each such key holds a stand-in (its default, or
an empty value of its type: ``""``, ``0``, ``False``, ``[]``, ``None``).
A problem is then left out when it could come from a stand-in:

* it names an invalid key (that key's own problem says enough), or
* the statement of ``check()`` that yielded it read an invalid key. A
  statement is one top-level statement of the method's body (typically one
  ``if`` block), found from its source; without the source, every read of an
  invalid key since the previous problem counts.

If ``check()`` raises while keys are invalid, the problems found before are
kept and the rest of the rules are left out (the key problems are reported
anyway); with every key valid, an exception is a bug and propagates.
"""

from __future__ import annotations

import ast
import inspect
import sys
import textwrap
import types
import typing
from datetime import timedelta
from typing import Any, Callable, Iterable, Mapping

import attrs

from exportkit.secrets import Secret

__all__ = ["cross_problems", "stand_in"]


def stand_in(field: attrs.Attribute[Any], base: Any, optional: bool) -> Any:
    """The value an invalid or missing key holds while cross-key rules run."""
    if field.default is not attrs.NOTHING:
        default: Any = field.default
        return default.factory() if isinstance(default, attrs.Factory) else default  # type: ignore[arg-type]
    if optional:
        return None
    if typing.get_origin(base) in (list, tuple):
        return []
    if base is timedelta:
        return timedelta(0)
    try:
        return base("") if isinstance(base, type) and issubclass(base, (str, Secret)) else base()
    except Exception:  # a type without an empty value: the rule reading it is left out anyway
        return None


def cross_problems(
    cls: type,
    values: Mapping[str, Any],
    stand_ins: Mapping[str, Any],
) -> list[tuple[str, str]]:
    """The ``(key, message)`` pairs of ``cls.check()`` that do not depend on an invalid key.

    :param cls: the settings class (with a ``check`` method).
    :param values: the keys that parsed, converted.
    :param stand_ins: invalid or missing key -> its stand-in value.
    """
    check = getattr(cls, "check", None)
    if check is None:
        return []
    if not stand_ins:
        return [(key, message) for key, message in cls(**values).check()]
    try:
        instance = cls(**values, **stand_ins)
    except Exception:  # the class refuses a stand-in: the rules cannot run without guessing
        return []
    invalid = frozenset(stand_ins)
    code = getattr(check, "__code__", None)
    reads: list[int | None] = []  # line in check() of each read of an invalid key
    view = _TrackingView(instance, invalid, code, reads)
    statements = _statement_ranges(check)
    found: list[tuple[str, str]] = []
    generator = check(view)
    if not isinstance(generator, types.GeneratorType):  # check() returned a list: no lines to tell rules apart
        return [(k, m) for k, m in (generator or ()) if k not in invalid and not reads]
    seen = 0
    while True:
        try:
            key, message = next(generator)
        except StopIteration:
            break
        except Exception:
            break  # a stand-in broke a rule; the invalid keys are reported on their own
        frame = generator.gi_frame
        line = frame.f_lineno if frame is not None else None
        new_reads, seen = reads[seen:], len(reads)
        if key in invalid:
            continue
        span = _containing(statements, line)
        if span is None:
            tainted = bool(new_reads)
        else:
            tainted = any(r is None or span[0] <= r <= span[1] for r in reads)
        if not tainted:
            found.append((key, message))
    return found


def _statement_ranges(check: Callable[..., Any]) -> list[tuple[int, int]]:
    """Absolute (first, last) line of each top-level statement in ``check``'s body, or ``[]``."""
    try:
        lines, start = inspect.getsourcelines(check)
        tree = ast.parse(textwrap.dedent("".join(lines)))
    except (OSError, TypeError, SyntaxError):
        return []
    func = tree.body[0] if tree.body else None
    if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return []
    offset = start - 1
    return [(stmt.lineno + offset, (stmt.end_lineno or stmt.lineno) + offset) for stmt in func.body]


def _containing(statements: Iterable[tuple[int, int]], line: int | None) -> tuple[int, int] | None:
    if line is None:
        return None
    return next((span for span in statements if span[0] <= line <= span[1]), None)


class _TrackingView:
    """Stands for the settings object inside ``check()``: notes where invalid keys are read.

    Properties and methods of the class run with the view as ``self``, so a
    helper that reads an invalid key is noticed too.
    """

    def __init__(self, instance: Any, invalid: frozenset[str], code: types.CodeType | None, reads: list[int | None]) -> None:
        object.__setattr__(self, "_view", (instance, invalid, code, reads))

    def __getattribute__(self, name: str) -> Any:
        instance, invalid, code, reads = object.__getattribute__(self, "_view")
        if name in invalid:
            reads.append(_line_in(code))
        attribute = inspect.getattr_static(type(instance), name, None)
        if isinstance(attribute, property) and attribute.fget is not None:
            return attribute.fget(self)
        if isinstance(attribute, types.FunctionType):
            return types.MethodType(attribute, self)
        return getattr(instance, name)

    def __setattr__(self, name: str, value: Any) -> None:
        raise attrs.exceptions.FrozenInstanceError()


def _line_in(code: types.CodeType | None) -> int | None:
    """The current line of the ``check()`` frame on the stack (``None`` if not found)."""
    frame = sys._getframe(2)
    while frame is not None:
        if frame.f_code is code:
            return frame.f_lineno
        frame = frame.f_back  # type: ignore[assignment]
    return None
