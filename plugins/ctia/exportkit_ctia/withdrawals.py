"""Withdrawals: a record that must stop being live has the judgement it holds expired.

* Before any expiry is sent, its intent is written durably
  (:mod:`exportkit_ctia.intents`), so a run killed in between is finished by
  the next open.
* Only this instance's judgements are expired; one held under another
  instance's XID is left to its owner and the withdrawal counts as done.
* A judgement already expired (marked, or queued for later) is not expired a
  second time: CTIA appends the reason on every expiry.
* After an expiry the record's next judgement starts at the next generation,
  so a record that comes back never maps onto the expired XID.
* When CTIA cannot take more now, the rest of the call is deferred; a refusal
  rejects that withdrawal (dead-lettered by the engine).
* In a dry run nothing is sent.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from exportkit.context import SinkContext
from exportkit.crashpoints import crash_point
from exportkit.errors import TransientError
from exportkit.results import BatchResult, Withdrawal
from exportkit_ctia import expiry_marks
from exportkit_ctia.client import RequestRejected
from exportkit_ctia.intents import IntentLog, generation_key, withdrawal_intent
from exportkit_ctia.ownership import is_own

if TYPE_CHECKING:
    from exportkit_ctia.delivery import Delivery

__all__ = ["expire_withdrawn"]


def expire_withdrawn(delivery: Delivery, withdrawals: Sequence[Withdrawal], context: SinkContext) -> BatchResult:
    """Expire the held judgement of each withdrawal (see the module docstring); returns every withdrawal's outcome."""
    result = BatchResult()
    deferred_because: str | None = None
    intents = [] if context.dry_run or delivery.client is None else _withdrawal_intents(delivery, withdrawals, context)
    for withdrawal in withdrawals:
        held = context.held(withdrawal.source_id)
        remote = dict(held.remote or {}) if held is not None else {}
        judgement_id = remote.get("judgement_id")
        if not judgement_id:
            result.accept(withdrawal)  # nothing of ours is live
            continue
        if context.dry_run or delivery.client is None:
            delivery.stats["dry_run_withdrawals"] += 1
            continue
        if deferred_because is not None:
            result.defer(withdrawal, deferred_because)
            continue
        if not is_own(delivery.settings, remote, context):
            delivery.left_to_owner(remote, context)
            result.accept(withdrawal)
            continue
        if expiry_marks.is_marked(context.store, judgement_id):  # expired (or queued) already
            expiry_marks.unmark(context.store, judgement_id)
            context.store.set(generation_key(withdrawal.source_id), int(remote.get("generation", 0)) + 1)
            delivery.stats["withdrawn"] += 1
            result.accept(withdrawal)
            continue
        try:
            done = delivery.client.expire_judgement(judgement_id, _withdrawal_reason(withdrawal))
            crash_point("judgement-expired")
        except TransientError as exc:
            delivery.breaker.failed(exc)
            deferred_because = str(exc)
            result.defer(withdrawal, deferred_because)
            continue
        except RequestRejected as exc:
            result.reject(withdrawal, str(exc))
            continue
        # A later comeback of this record must not map onto the expired XID.
        context.store.set(generation_key(withdrawal.source_id), int(remote.get("generation", 0)) + 1)
        delivery.stats["withdrawn" if done else "expired_already_gone"] += 1
        result.accept(withdrawal)
    delivery.stats["deferred"] += sum(1 for o in result if o.status == "deferred")
    IntentLog(context).discard(i for i in intents if getattr(result.get(i["source_id"]), "status", None) == "rejected")
    return result

def _withdrawal_intents(delivery: Delivery, withdrawals: Sequence[Withdrawal], context: SinkContext) -> list[dict[str, Any]]:
    """Write the intents of the expiries this call will make durably, before any is sent."""
    log = IntentLog(context)
    log.settle()
    intents = []
    for withdrawal in withdrawals:
        held = context.held(withdrawal.source_id)
        remote = dict(held.remote or {}) if held is not None else {}
        judgement_id = remote.get("judgement_id")
        if judgement_id and is_own(delivery.settings, remote, context) and not expiry_marks.is_marked(context.store, judgement_id):
            intents.append(withdrawal_intent(withdrawal.source_id, judgement_id, int(remote.get("generation", 0)), _withdrawal_reason(withdrawal)))
    log.add(intents)
    return intents


def _withdrawal_reason(withdrawal: Withdrawal) -> str:
    why = "expired" if withdrawal.reason == "expired" else "removed from the ThreatQ collection"
    return f"withdrawn: indicator {withdrawal.source_id} {why}"
