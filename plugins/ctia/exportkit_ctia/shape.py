"""The settings that shape every judgement, and the warning before a change of them costs requests.

``disposition``, ``confidence``, ``severity``, ``priority`` and
``expiration`` go into every judgement and into its external id. CTIA never
updates a judgement, so a judgement made with other values can only be
superseded: a new judgement plus an expiry of the old one, one request each
against the organisation's hourly limit. After such a change every held
judgement is superseded the next time its indicator is exported.

The sink remembers the values its judgements were made with (in its store,
at the end of each run that sent something); ``exportkit check`` and a dry
run compare them with the configured ones and warn, with the number of held
judgements, before a run makes the change.
"""

from __future__ import annotations

import math
from typing import Any

from exportkit.context import SinkContext
from exportkit_ctia.settings import CtiaSettings

__all__ = ["SHAPING_SETTINGS", "STORE_KEY", "judgement_shape", "shape_changes", "supersede_warning", "remember_shape"]

SHAPING_SETTINGS = ("disposition", "confidence", "severity", "priority", "expiration")
#: key of the remembered values in the sink's store
STORE_KEY = "judgement_settings"


def judgement_shape(settings: CtiaSettings) -> dict[str, Any]:
    """The values of the shaping settings."""
    return {key: getattr(settings, key) for key in SHAPING_SETTINGS}


def shape_changes(remembered: Any, settings: CtiaSettings) -> list[str]:
    """``["confidence High -> Medium", ...]`` for each shaping setting that differs from ``remembered``."""
    if not isinstance(remembered, dict):
        return []
    current = judgement_shape(settings)
    return [f"{key} {remembered[key]} -> {current[key]}" for key in SHAPING_SETTINGS if key in remembered and remembered[key] != current[key]]


def _held(context: SinkContext) -> int | None:
    count = getattr(context.holdings, "count", None)
    return int(count()) if callable(count) else None


def supersede_warning(context: SinkContext, settings: CtiaSettings) -> str | None:
    """The warning to show when the shaping settings changed since the held judgements were made, else ``None``."""
    changes = shape_changes(context.store.get(STORE_KEY), settings)
    if not changes:
        return None
    held = _held(context)
    if held == 0:
        return None
    if held is None:
        return f"{', '.join(changes)}: every held judgement will be superseded (a new judgement and an expiry each)"
    per_bundle = settings.max_entities // 2 if settings.feed else settings.max_entities
    requests = held + math.ceil(held / max(1, per_bundle))  # one expiry each, the new ones in bundles
    runs = math.ceil(requests / settings.request_budget)
    return (
        f"{', '.join(changes)}: each of the {held} held judgements will be superseded when its indicator is next exported "
        f"(a new judgement and an expiry each: about {requests} CTIA requests against the organisation's hourly limit, "
        f"{runs} run(s) at request_budget {settings.request_budget})"
    )


def remember_shape(context: SinkContext, settings: CtiaSettings) -> None:
    """Record the values the judgements of this run were made with."""
    context.store.set(STORE_KEY, judgement_shape(settings))
