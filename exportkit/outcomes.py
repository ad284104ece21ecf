"""The one rule for turning what a sink hook returned into one outcome per item.

The engine (:mod:`exportkit.sinkrun`) and the testing kit
(:class:`exportkit.testing.SinkHarness`) both use :func:`resolve_outcomes`, so
a sink that passes the kit gets exactly the same outcomes in a run. The rule:

* the hook's results (one per implementation, pluggy collects them) are
  merged; ``None`` adds nothing, and a later outcome for the same id replaces
  an earlier one (as :class:`~exportkit.results.BatchResult` does);
* an item the sink did not mention is ``accepted`` without remote ids;
* contract breaches are *problems*: a result that is not a ``BatchResult``
  (ignored), an outcome for an id the sink was not given (dropped), a status
  other than ``accepted`` without a reason (kept, with the reason "no reason
  given by the sink"), an accepted ``remote`` that is not JSON (the item is
  ``deferred``: the state could not store it).

The engine logs the problems and goes on; the kit fails the test with them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import attrs

from exportkit import storedjson
from exportkit.records import Indicator
from exportkit.results import BatchResult, Outcome, Withdrawal
from exportkit.secrets import redact

__all__ = ["ResolvedOutcomes", "resolve_outcomes", "source_id_of", "NO_REASON"]

#: the reason given to a non-accepted outcome that came without one
NO_REASON = "no reason given by the sink"


@attrs.frozen
class ResolvedOutcomes:
    """One outcome per item, in the items' order, and the contract breaches found on the way."""

    outcomes: list[Outcome]
    problems: list[str]


def source_id_of(item: Indicator | Withdrawal | str) -> str:
    """The source id of a record, a withdrawal, or an id itself (``exportkit_verify`` gets ids)."""
    return item if isinstance(item, str) else item.source_id


def resolve_outcomes(
    hook: str, items: Sequence[Indicator] | Sequence[Withdrawal] | Sequence[str], results: Iterable[Any]
) -> ResolvedOutcomes:
    """Apply the outcome rule (module docstring) to the results of one hook call.

    :param hook: the hook name, for the problem texts.
    :param items: the records, withdrawals or source ids the hook was given.
    :param results: what the hook call returned (pluggy's list of results).
    """
    problems: list[str] = []
    merged = BatchResult()
    for result in results:
        if result is None:
            continue
        if not isinstance(result, BatchResult):
            problems.append(f"{hook} returned {type(result).__name__}, expected a BatchResult or None")
            continue
        for outcome in result:
            merged.add(outcome)
    asked = {source_id_of(item) for item in items}
    unknown = sorted(o.source_id for o in merged if o.source_id not in asked)
    if unknown:
        problems.append(f"{hook} reported outcomes for ids not in the batch: {', '.join(unknown[:5])}")
    outcomes: list[Outcome] = []
    for item in items:
        source_id = source_id_of(item)
        outcome = merged.get(source_id) or Outcome(source_id, "accepted")
        if outcome.status != "accepted" and not outcome.reason:
            problems.append(f"{hook}: {outcome.status} outcome for {source_id} has no reason")
            outcome = attrs.evolve(outcome, reason=NO_REASON)
        if outcome.remote is not None:
            try:
                storedjson.dumps(outcome.remote)  # as the holdings will store it
            except (TypeError, ValueError) as exc:
                problems.append(f"{hook}: remote of {source_id} is not JSON-serialisable: {exc}")
                outcome = Outcome(source_id, "deferred", "the sink's remote ids could not be stored (not JSON)")
        if outcome.reason:
            clean = redact(outcome.reason)
            if clean != outcome.reason:
                outcome = attrs.evolve(outcome, reason=clean)
        outcomes.append(outcome)
    return ResolvedOutcomes(outcomes, problems)
