"""The judgement's ``reason``: a jinja2 template of the record (``[sinks.ctia] reason``), bounded in length.

* The template runs in exportkit's sandbox, strict (a misspelt variable fails
  the record, not the run), and sees only :func:`reason_variables`.
* The text is cut to :data:`REASON_MAX` characters, leaving room for the one
  expiry reason CTIA appends (:data:`EXPIRY_REASON_MAX`).
* The default template is rendered without jinja2, and a custom one once per
  distinct value of the variables it names (see ``_ReasonTemplate``): the
  same text, at a fraction of the cost per judgement.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import attrs
import jinja2
import jinja2.meta

from exportkit.records import Indicator, format_time
from exportkit_ctia.observables import Unmappable
from exportkit_ctia.settings import DEFAULT_REASON, reason_environment

__all__ = ["EXPIRY_REASON_MAX", "REASON_MAX", "reason_variables", "render_reason"]

#: CTIA appends the expiry reason to the judgement's reason and refuses the
#: result past CTIM's 1024 characters; so an expiry reason is at most this long ...
EXPIRY_REASON_MAX = 200
#: ... and a judgement's own reason leaves room for it (and the space between)
REASON_MAX = 1024 - EXPIRY_REASON_MAX - 1


@attrs.frozen
class _ReasonTemplate:
    """A compiled reason template, the variables it reads, and the texts it rendered for their values.

    A template sees only the variables it is given, so its text is a function of
    the values of those it names: records alike in them (the default template
    names score, status and tags) share one rendering instead of paying for
    jinja2 each time. At most :data:`_RENDERED_KEPT` texts are kept, each for values
    of at most :data:`_KEY_CHARS_KEPT` characters, so they take a few MiB at most.
    """

    template: jinja2.Template
    names: tuple[str, ...]
    rendered: dict[tuple[Any, ...], str] = attrs.field(factory=dict)


_RENDERED_KEPT = 4096
_KEY_CHARS_KEPT = 2048


@functools.lru_cache(maxsize=16)
def _template(text: str) -> _ReasonTemplate:
    environment = reason_environment()
    names = tuple(sorted(jinja2.meta.find_undeclared_variables(environment.parse(text))))
    return _ReasonTemplate(environment.from_string(text), names)


def _frozen(value: Any) -> Any:
    """A hashable stand-in for a template variable's value; values of different types never compare equal."""
    if isinstance(value, list):
        return ("list", tuple(_frozen(v) for v in value))
    if isinstance(value, dict):
        return ("dict", tuple((k, _frozen(v)) for k, v in value.items()))
    return (type(value).__name__, value)


def _score_variable(record: Indicator) -> Any:
    score: Any = record.score
    if score is not None and float(score).is_integer():
        score = int(score)
    return score


def _attributes_variable(record: Indicator) -> dict[str, list[str]]:
    attributes: dict[str, list[str]] = {}
    for attribute in record.attributes:
        attributes.setdefault(attribute.name, []).append(attribute.value)
    return attributes


#: each variable a reason template can use, and how it is read from a record
_REASON_VARIABLES: dict[str, Callable[[Indicator], Any]] = {
    "score": _score_variable, "status": lambda r: r.status, "tags": lambda r: list(r.tags), "type": lambda r: r.type,
    "type_name": lambda r: r.type_name, "value": lambda r: r.value, "source_id": lambda r: r.source_id,
    "source": lambda r: r.source, "sources": lambda r: list(r.sources), "tlp": lambda r: r.tlp,
    "description": lambda r: r.description, "attributes": _attributes_variable,
    "expires_at": lambda r: format_time(r.expires_at), "link": lambda r: r.link,
}


def reason_variables(record: Indicator) -> dict[str, Any]:
    """What a reason template can use (the keys of ``settings.REASON_SAMPLE``)."""
    return {name: read(record) for name, read in _REASON_VARIABLES.items()}


def _cut(text: str) -> str:
    return text if len(text) <= REASON_MAX else text[: REASON_MAX - 1] + "\u2026"


def _default_reason(record: Indicator) -> str:
    """:data:`~exportkit_ctia.settings.DEFAULT_REASON` rendered without jinja2 (a fifth of the cost; most
    instances keep the default). A test holds it to what the template renders."""
    text = f"ThreatQ score {_score_variable(record)}, status {record.status}"
    if record.tags:
        text += ", tags: " + ", ".join(record.tags)
    return text.strip()


def render_reason(template: str, record: Indicator) -> str:
    """Render the reason template for ``record``, cut to :data:`REASON_MAX` characters.

    :raises Unmappable: the template failed for this record.
    """
    if template == DEFAULT_REASON:
        return _cut(_default_reason(record))
    compiled = _template(template)
    key = tuple(_frozen(_REASON_VARIABLES[name](record)) for name in compiled.names if name in _REASON_VARIABLES)
    text = compiled.rendered.get(key)
    if text is not None:
        return text
    try:
        text = compiled.template.render(**reason_variables(record)).strip()
    except jinja2.TemplateError as exc:
        raise Unmappable(f"the reason template failed: {exc}") from None
    text = _cut(text)
    if len(repr(key)) <= _KEY_CHARS_KEPT:  # values that vary per record (a long description) are not kept
        if len(compiled.rendered) >= _RENDERED_KEPT:
            compiled.rendered.clear()
        compiled.rendered[key] = text
    return text
