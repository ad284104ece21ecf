"""Crash points: a test facility that ends the process hard right after a named step.

Crash-safety tests need to stop a run *exactly* between two steps (a
judgement created but not yet recorded, an expiry made but not yet
committed), not at a random moment. The engine and sinks call
:func:`crash_point` right after each such step; it does nothing unless the
environment variable ``EXPORTKIT_CRASH_AT`` names that point::

    EXPORTKIT_CRASH_AT=bundle-answered        # the first time a bundle answer arrives
    EXPORTKIT_CRASH_AT=judgement-expired:3    # right after the third expiry of the run

The process then ends at once with :data:`CRASH_EXIT_CODE` through
``os._exit``: no ``finally`` blocks, no close hooks, no report, no commit of
an open transaction, as if it had been killed with SIGKILL. One line on
standard error names the point, so a test can tell a crash point from a
real failure.

This is for tests only; an operator never sets it. The points (see
:data:`POINTS`) are part of the test contract of the engine and the
in-tree sinks, so a third-party sink may call :func:`crash_point` with a
name of its own after its own steps.
"""

from __future__ import annotations

import os
import threading

__all__ = ["ENV", "CRASH_EXIT_CODE", "POINTS", "crash_point", "parse_crash_at"]

ENV = "EXPORTKIT_CRASH_AT"
#: the exit status of a process ended by a crash point (chosen to differ from every exit code a run uses)
CRASH_EXIT_CODE = 86

#: the points the engine and the CTIA sink call, and the step each follows
POINTS: dict[str, str] = {
    "intent-recorded": "CTIA: the intent log was written, before the bundle is sent",
    "bundle-answered": "CTIA: a bundle import answered, before anything is recorded or expired",
    "judgement-expired": "CTIA: one judgement was expired (superseded, withdrawn or recovered), before the next step",
    "holdings-written": "engine: one sink's holdings of a batch were written, before the batch transaction commits",
    "checkpoint-written": "engine: a batch transaction (holdings, dead letters, checkpoint) committed",
}

_lock = threading.Lock()
_hits: dict[str, int] = {}


def parse_crash_at(text: str | None) -> tuple[str, int] | None:
    """``"point[:n]"`` -> ``(point, n)`` (``n`` defaults to 1); ``None`` for an empty value.

    :raises ValueError: ``n`` is not a positive integer.
    """
    text = (text or "").strip()
    if not text:
        return None
    point, _, count = text.partition(":")
    n = int(count) if count else 1
    if n < 1:
        raise ValueError(f"{ENV}: the count must be 1 or more, not {count!r}")
    return point.strip(), n


def crash_point(name: str) -> None:
    """Exit the process hard if ``EXPORTKIT_CRASH_AT`` asks for this point and this is its n-th passage.

    Counts passages per process; reads the environment at every call, so a
    test may set it in-process too. Thread-safe.
    """
    try:
        wanted = parse_crash_at(os.environ.get(ENV))
    except ValueError:
        wanted = None
    if wanted is None or wanted[0] != name:
        return
    with _lock:
        _hits[name] = _hits.get(name, 0) + 1
        reached = _hits[name] == wanted[1]
    if reached:
        os.write(2, f"exportkit: crash point {name}:{wanted[1]} reached ({ENV}); exiting hard\n".encode())
        os._exit(CRASH_EXIT_CODE)
