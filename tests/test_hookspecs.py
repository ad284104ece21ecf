"""Every hook spec documents itself: prefix, docstring, each argument, when it fires, what results mean."""

from __future__ import annotations

import inspect
import re

import pytest

from exportkit import hookspecs
from exportkit.hookspecs import NAME, hookspec
from exportkit.plugins import new_manager

WHEN = re.compile(r"\b(called|calls|fires|once|always|after|before|when|while|is over|has taken)\b", re.I)


def spec_problems(pm) -> dict[str, list[str]]:
    """Documentation problems of every hook spec in ``pm``, by hook name."""
    out: dict[str, list[str]] = {}
    for name in sorted(vars(pm.hook)):
        caller = getattr(pm.hook, name)
        spec = getattr(caller, "spec", None)
        if spec is None:
            continue
        problems = []
        doc = inspect.getdoc(spec.function) or ""
        if not name.startswith(f"{NAME}_"):
            problems.append(f"name does not start with {NAME}_")
        if not doc.strip():
            problems.append("no docstring")
        for arg in spec.argnames:
            if f":param {arg}:" not in doc:
                problems.append(f"argument {arg!r} has no ':param {arg}:'")
        if doc and not WHEN.search(doc):
            problems.append("does not say when it is called")
        returns = inspect.signature(spec.function).return_annotation
        if returns not in (None, "None", inspect.Signature.empty) and ":returns:" not in doc:
            problems.append("returns a value but has no ':returns:' saying how results combine")
        if problems:
            out[name] = problems
    return out


def test_every_hook_spec_is_documented():
    pm = new_manager()
    names = [n for n in vars(pm.hook) if getattr(getattr(pm.hook, n), "spec", None)]
    assert len(names) >= 10  # the checker saw the specs at all
    assert spec_problems(pm) == {}


def test_every_spec_is_exported():
    pm = new_manager()
    names = {n for n in vars(pm.hook) if getattr(getattr(pm.hook, n), "spec", None)}
    assert names <= set(hookspecs.__all__)


class BadSpecs:
    """Specs written the wrong ways, to show the checker catches each."""

    @hookspec
    def exportkit_nodoc(self, records):
        pass

    @hookspec
    def exportkit_half(self, records, context) -> list:
        """Called once. Sends things.

        :param records: the records.
        """

    @hookspec
    def export_wrong_prefix(self) -> None:
        """Called once per run. Results are ignored."""

    @hookspec
    def exportkit_timeless(self, context) -> None:
        """Does a thing.

        :param context: the context.
        """


def test_checker_finds_each_kind_of_gap():
    pm = new_manager()
    pm.add_hookspecs(BadSpecs)
    found = spec_problems(pm)
    assert found["exportkit_nodoc"] == ["no docstring", "argument 'records' has no ':param records:'"]
    assert found["exportkit_half"] == [
        "argument 'context' has no ':param context:'",
        "returns a value but has no ':returns:' saying how results combine",
    ]
    assert found["export_wrong_prefix"] == ["name does not start with exportkit_"]
    assert found["exportkit_timeless"] == ["does not say when it is called"]
    assert set(found) == {"exportkit_nodoc", "exportkit_half", "export_wrong_prefix", "exportkit_timeless"}


@pytest.mark.parametrize("hook", ["exportkit_open", "exportkit_write", "exportkit_withdraw", "exportkit_close"])
def test_data_path_hooks_take_the_context(hook):
    spec = getattr(new_manager().hook, hook).spec
    assert "context" in spec.argnames


def test_markers_share_the_project_name():
    assert hookspecs.hookspec.project_name == hookspecs.hookimpl.project_name == NAME == "exportkit"
