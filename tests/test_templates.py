"""The sandboxed jinja2 environment every template of the project runs in."""

from __future__ import annotations

import jinja2
import pytest

from exportkit.templates import TEMPLATE_GLOBALS, sandboxed_environment


def test_only_the_documented_globals_are_in_reach():
    env = sandboxed_environment()
    assert set(env.globals) == set(TEMPLATE_GLOBALS) == {"range"}


@pytest.mark.parametrize(
    "source",
    [
        "{{ cycler }}",
        "{{ lipsum }}",
        "{{ ''.__class__.__mro__ }}",
        "{{ value.__class__.__init__.__globals__ }}",
        "{% set x = [] %}{{ x.append(1) }}",
    ],
)
def test_escapes_fail_instead_of_running(source):
    with pytest.raises(jinja2.TemplateError):
        sandboxed_environment().from_string(source).render(value="v")


def test_finalize_applies_to_every_expression():
    env = sandboxed_environment(finalize=lambda v: str(v).upper())
    assert env.from_string("{{ a }}-{{ b }}").render(a="x", b="y") == "X-Y"
