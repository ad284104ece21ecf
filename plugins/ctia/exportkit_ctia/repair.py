"""Reconcile repair: verify held judgements in bulk and re-create those no longer live.

The engine calls ``exportkit_verify`` during a reconcile pass with ids of
records the sink holds that are still in the collection, without the records
themselves. So a judgement that is no longer live (expired by another tool,
or lapsed at the end of its configured expiration) is re-created from what
the sink knows without the record:

* CTIA's own copy of the dead judgement (read in bulk with the liveness
  check): observable, disposition (Clean stays Clean), TLP, ``source_uri``,
  external references, authorized users and groups, and ``reason`` cut back
  to its exported length (``reason_chars`` in the holding; CTIA appends the
  expiry reason to it);
* the holding: content hash, generation, and ``until``, the record's own
  ``expires_at`` when it had one;
* the current settings: confidence, severity, priority, source, expiration.

The new judgement is the record's next generation, under the very XID the
write path would give that generation (:func:`~exportkit_ctia.mapping.xid_from_parts`),
so a later state reset finds it through ``exists``. ``valid_time`` runs from
now to ``until``, or to now plus the configured expiration. A judgement
whose ``until`` has passed is not revived (the indicator expired in
ThreatQ; counted as ``lapsed``). One whose copy CTIA no longer shows
(deleted) cannot be rebuilt here and is reported rejected, which makes the
run partial (exit 3); the record's next change re-creates it.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import attrs

from exportkit.context import SinkContext
from exportkit.errors import TransientError
from exportkit.records import format_time
from exportkit.results import BatchResult
from exportkit_ctia.liveness import is_live, read_judgements, utc_now
from exportkit_ctia.mapping import EXPIRATION_DAYS, NEVER
from exportkit_ctia.xids import instance_xid, record_xid, xid_from_parts
from exportkit_ctia.schema import DISPOSITION_NUMBERS, entity_errors, parse_ctim_time
from exportkit_ctia.settings import CtiaSettings

if TYPE_CHECKING:
    from exportkit_ctia.delivery import Delivery

__all__ = ["RepairJudgement", "Lapsed", "rebuild", "verify"]

#: fields of a stored judgement that carry over to its re-created generation as they are
_CARRIED = ("source_uri", "external_references", "authorized_users", "authorized_groups", "language", "reason_uri")


class Lapsed(Exception):
    """The judgement ended at the record's own ``expires_at``: it must not be revived."""


@attrs.frozen
class RepairJudgement:
    """A re-created judgement: the same shape the delivery sends for a record."""

    source_id: str
    body: dict[str, Any]
    xid: str
    generation: int
    content_hash: str
    held: Mapping[str, Any]
    copy: Mapping[str, Any]

    @property
    def transient_id(self) -> str:
        return str(self.body["id"])


def rebuild(settings: CtiaSettings, context: SinkContext, source_id: str, content_hash: str,
            held: Mapping[str, Any], copy: Mapping[str, Any], generation: int) -> RepairJudgement:
    """The judgement to re-create for a held record whose judgement is ``copy`` (see the module docstring).

    :raises Lapsed: the held ``until`` has passed.
    :raises ValueError: the copy cannot make a valid judgement (its text is the reason).
    """
    now = context.now
    until = parse_ctim_time(held["until"]) if held.get("until") else None
    if until is not None:
        if until <= utc_now():
            raise Lapsed(f"the indicator expired at {held['until']}")
        end = until
    else:
        days = EXPIRATION_DAYS.get(settings.expiration)
        end = NEVER if days is None else now + timedelta(days=days)
    end = min(end, NEVER)
    observable = copy.get("observable") or {}
    if not observable.get("type") or not observable.get("value"):
        raise ValueError("CTIA's copy of the judgement has no observable")
    disposition = "Clean" if copy.get("disposition_name") == "Clean" else settings.disposition
    tlp = "red" if copy.get("tlp") == "red" else "amber"
    reason = str(copy.get("reason") or "")
    if isinstance(held.get("reason_chars"), int):
        reason = reason[: held["reason_chars"]]
    xid = xid_from_parts(settings, context.namespace, source_id, content_hash, disposition, tlp, observable, generation)
    body: dict[str, Any] = {
        "type": "judgement",
        "id": f"transient:{xid}",
        "observable": {"type": observable["type"], "value": observable["value"]},
        "disposition": DISPOSITION_NUMBERS[disposition],
        "disposition_name": disposition,
        "confidence": settings.confidence,
        "severity": settings.severity,
        "priority": settings.priority,
        "source": settings.source,
        "tlp": tlp,
        "timestamp": format_time(now),
        "valid_time": {"start_time": format_time(now), "end_time": format_time(end)},
        "external_ids": [xid, record_xid(settings, context.namespace, source_id), instance_xid(settings, context.namespace)],
    }
    if reason:
        body["reason"] = reason
    body.update({key: copy[key] for key in _CARRIED if key in copy})
    problems = entity_errors("NewJudgement", body)
    if problems:
        raise ValueError("the re-created judgement would be invalid: " + "; ".join(problems[:3]))
    return RepairJudgement(source_id, body, xid, generation, content_hash, dict(held), dict(copy))


def verify(delivery: Delivery, source_ids: Sequence[str], context: SinkContext) -> BatchResult:
    """Verify what the sink holds for ``source_ids``; re-create what is not live (one batch of the breaker)."""
    result = BatchResult()
    if context.dry_run or delivery.client is None:
        return result
    held = {sid: h for sid, h in context.holdings.get_many(source_ids).items() if (h.remote or {}).get("judgement_id")}
    try:
        found = read_judgements(delivery.client, [h.remote["judgement_id"] for h in held.values()])  # type: ignore[index]
    except TransientError as exc:
        delivery.breaker.failed(exc)
        for sid in held:
            result.defer(sid, f"could not verify now: {exc}")
        return result
    now: datetime = utc_now()
    dead = []
    for sid, holding in held.items():
        remote = dict(holding.remote or {})
        copy = found.get(remote["judgement_id"])
        delivery.stats["verified"] += 1
        if is_live(copy, now):
            continue
        if copy is None:
            delivery.stats["gone"] += 1
            result.reject(sid, "the held judgement is gone from CTIA (deleted); the indicator's next change sends it again, "
                               "or `exportkit state reset --sink <name>` sends everything again now")
            continue
        try:
            dead.append(rebuild(delivery.settings, context, sid, holding.content_hash, remote, copy, int(remote.get("generation", 0)) + 1))
        except Lapsed:
            delivery.stats["lapsed"] += 1
        except ValueError as exc:
            result.reject(sid, str(exc))

    def accept(judgement: RepairJudgement, answer: dict[str, Any], result: BatchResult, context: SinkContext) -> None:
        remote = delivery.remote(judgement, answer, context)
        if judgement.held.get("until"):
            remote["until"] = judgement.held["until"]
        delivery.stats["repaired"] += 1
        result.accept(judgement.source_id, remote=remote)

    def next_generation(judgement: RepairJudgement, context: SinkContext) -> RepairJudgement:
        return rebuild(delivery.settings, context, judgement.source_id, judgement.content_hash, judgement.held, judgement.copy, judgement.generation + 1)

    if dead:
        context.logger.info("reconcile: %d held judgement(s) are no longer live; re-creating them", len(dead))
        delivery.send(dead, result, context, next_generation=next_generation, accept=accept)
    return result
