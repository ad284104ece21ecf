"""The one way exportkit and its sinks build jinja2 environments: sandboxed, with nothing extra in reach.

Templates come from config files (a stdout template, a CTIA ``reason``, a
webhook body), and a config file is not trusted with the process: a
template like ``{{ cycler.__init__.__globals__.os.popen('id').read() }}``
must not run a command, and ``lipsum.__globals__['os'].environ`` must not
read the environment. So every environment is an
:class:`~jinja2.sandbox.ImmutableSandboxedEnvironment` (no access to
``_``-prefixed attributes, no calls that change lists or dicts) whose
globals hold only :data:`TEMPLATE_GLOBALS`; Jinja's ``lipsum``, ``cycler``,
``joiner``, ``dict`` and ``namespace`` are removed. Jinja's built-in filters
and tests stay available. A template sees only the variables its caller
passes to ``render``.
"""

from __future__ import annotations

from typing import Any, Callable

import jinja2
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

__all__ = ["sandboxed_environment", "TEMPLATE_GLOBALS", "SecurityError"]

#: the only global names a template can use besides the variables it is given
TEMPLATE_GLOBALS: dict[str, Any] = {"range": range}


def sandboxed_environment(
    *,
    loader: jinja2.BaseLoader | None = None,
    finalize: Callable[[Any], Any] | None = None,
    keep_trailing_newline: bool = False,
) -> ImmutableSandboxedEnvironment:
    """A strict, sandboxed, non-HTML environment.

    :param loader: where named templates come from (package templates); ``None`` for strings only.
    :param finalize: applied to the value of every ``{{ ... }}`` expression (an escaper, for example).
    :param keep_trailing_newline: keep a template's final newline.

    ``StrictUndefined`` makes a misspelt variable fail loudly instead of
    printing nothing; there is no autoescaping because the output is not HTML.
    """
    env = ImmutableSandboxedEnvironment(
        loader=loader,
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=keep_trailing_newline,
        finalize=finalize,
    )
    env.globals.clear()
    env.globals.update(TEMPLATE_GLOBALS)
    return env
