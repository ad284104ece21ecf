"""The intent log: what makes every change and withdrawal of the CTIA sink recoverable after a crash.

A change is several steps: create the new judgement (bundle import), link it
to the feed (same bundle), record the holding (the engine, with the batch),
expire the old judgement. A withdrawal is two: expire the judgement, forget
the holding. A process killed between two steps used to leave a judgement
created but never recorded; when the indicator then changed again, the next
run created a third one and only expired the recorded one, so two stayed
live for good.

The protocol:

1. **Before sending**, every judgement about to be created is written to the
   log *durably* (:meth:`~exportkit.context.KeyValueStore.set_durable`): the
   record, its external id Y, the judgement it supersedes (X, or none) and
   the body, so the next run can send it again. The same for withdrawals:
   "expiring judgement X of record R".
2. The run goes on as usual. An intent is **settled** once the holdings show
   its outcome: the record's holding names Y (the change was recorded), or
   no longer names X (the withdrawal was recorded). Settled intents are
   dropped at the start of the next batch and at close; the holdings are the
   truth, so it never matters whether a drop or a batch commit came first.
3. At the next **open**, before any new work, every intent still pending is
   **finished** (:func:`finish_pending`):

   * a change whose record still holds X: send Y's bundle again (CTIA
     answers ``created`` if the first attempt never arrived, ``exists`` if it
     did; both give Y's id), expire X unless the dead run did, record the
     holding of Y (both liveness checks in one bulk read; a Y expired since
     by another tool is dropped, and the record's next send steps past it);
   * a change whose record has moved on to a third judgement (or was
     withdrawn): Y would be a second live judgement, so Y is looked up by
     its external id and expired if it is live;
   * a change of a record the sink does not hold, while the delivery looks
     up unheld records anyway (after lost state): left to that lookup;
   * a withdrawal whose record still holds X: expire X again (a judgement
     that is gone, or that CTIA refuses to expire a second time, counts as
     done), bump the generation, forget the holding.

   An intent leaves the log only after its last step (for a change, the
   durable holdings write), so a crash *during* recovery is recovered by
   the next open in the same way.

When CTIA cannot be reached, pending intents stay in the log and ``open``
fails as transient: the sink does no new work until they are finished.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Callable

from exportkit.context import Holding, SinkContext
from exportkit.crashpoints import crash_point
from exportkit_ctia.client import CtiaClient, RequestRejected
from exportkit_ctia.liveness import is_live, read_judgements, utc_now
from exportkit_ctia.mapping import MappedJudgement, bundle
from exportkit_ctia.settings import CtiaSettings

__all__ = ["INTENTS_KEY", "IntentLog", "change_intent", "withdrawal_intent", "is_settled", "finish_pending", "generation_key"]

#: the sink-store key of the log (written only with set_durable)
INTENTS_KEY = "intents"


def generation_key(source_id: str) -> str:
    """Store key of the generation a record's next judgement starts at (after a withdrawal)."""
    return f"generation:{source_id}"


def _key(intent: Mapping[str, Any]) -> tuple[str, str, str]:
    return intent["kind"], intent["source_id"], intent.get("xid") or intent.get("judgement_id") or ""


def _held_judgement(holding: Holding | None) -> str | None:
    found = (holding.remote or {}).get("judgement_id") if holding is not None else None
    return str(found) if found else None


def change_intent(
    source_id: str,
    content_hash: str,
    judgement: MappedJudgement,
    held_remote: Mapping[str, Any] | None,
    relationship: Mapping[str, Any] | None,
    remote_extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The intent to create ``judgement`` for the version ``content_hash`` of a record.

    :param judgement: a :class:`~exportkit_ctia.mapping.MappedJudgement`, or
        anything with its ``body``, ``xid`` and ``generation``.
    :param held_remote: the ``remote`` of the record's holding now (the
        judgement this one supersedes), or ``None``.
    :param relationship: the ``element-of`` relationship sent in the same bundle, if any.
    :param remote_extra: more keys for the holding's ``remote`` when recovery records it.
    """
    return {
        "kind": "change",
        "source_id": source_id,
        "content_hash": content_hash,
        "xid": judgement.xid,
        "generation": judgement.generation,
        "previous": (held_remote or {}).get("judgement_id"),
        "previous_remote": dict(held_remote) if held_remote else None,
        "remote_extra": dict(remote_extra or {}),
        "judgement": judgement.body,
        "relationship": dict(relationship) if relationship else None,
    }


def withdrawal_intent(source_id: str, judgement_id: str, generation: int, reason: str) -> dict[str, Any]:
    """The intent to expire ``judgement_id``, the judgement record ``source_id`` holds."""
    return {"kind": "withdrawal", "source_id": source_id, "judgement_id": judgement_id, "generation": generation, "reason": reason}


def is_settled(intent: Mapping[str, Any], holding: Holding | None) -> bool:
    """True when the holdings already show the intent's outcome."""
    if intent["kind"] == "change":
        return holding is not None and (holding.remote or {}).get("xid") == str(intent["xid"])
    return bool(_held_judgement(holding) != intent["judgement_id"])


class IntentLog:
    """The pending intents of one sink, kept in its store under :data:`INTENTS_KEY`.

    Every write is durable (committed before it returns); reads come from
    the store each time, so two objects over one store agree.
    """

    def __init__(self, context: SinkContext) -> None:
        self.context = context

    def pending(self) -> list[dict[str, Any]]:
        return list(self.context.store.get(INTENTS_KEY, []) or [])

    def _save(self, intents: list[dict[str, Any]]) -> None:
        self.context.store.set_durable(INTENTS_KEY, intents)

    def add(self, intents: Sequence[dict[str, Any]]) -> None:
        """Append intents durably (once each); call *before* sending the requests they describe."""
        if intents:
            pending = self.pending()
            known = {_key(i) for i in pending}
            self._save(pending + [i for i in intents if _key(i) not in known])
            crash_point("intent-recorded")

    def discard(self, done: Iterable[Mapping[str, Any]]) -> None:
        """Drop these intents (one durable write)."""
        gone = {_key(i) for i in done}
        if not gone:
            return
        self._save([i for i in self.pending() if _key(i) not in gone])

    def settle(self) -> int:
        """Drop every intent whose outcome the holdings already show; returns how many are still pending."""
        pending = self.pending()
        if not pending:
            return 0
        held = self.context.holdings.get_many({i["source_id"] for i in pending})
        left = [i for i in pending if not is_settled(i, held.get(i["source_id"]))]
        if len(left) != len(pending):
            self._save(left)
        return len(left)


def _expire(client: CtiaClient, judgement_id: str, reason: str, stats: Counter[str], context: SinkContext) -> None:
    """Expire one judgement; one CTIA no longer has, or refuses to expire again, counts as done.

    The dead run may have expired it already. CTIA appends the reason on
    every expiry and refuses a reason past 1024 characters, which a first
    expiry never reaches (:mod:`exportkit_ctia.expiry_marks`): a refusal here
    means an earlier expiry went through.
    """
    try:
        done = client.expire_judgement(judgement_id, reason)
    except RequestRejected as exc:
        context.logger.warning("CTIA refused to expire %s again (an earlier expiry went through): %s", judgement_id, exc)
        stats["recovery_expired_before"] += 1
        return
    crash_point("judgement-expired")
    stats["recovery_expired" if done else "recovery_expired_already_gone"] += 1


def _always(remote: Mapping[str, Any] | None) -> bool:
    return True


def finish_pending(
    client: CtiaClient,
    settings: CtiaSettings,
    context: SinkContext,
    stats: Counter[str],
    may_expire: Callable[[Mapping[str, Any] | None], bool] = _always,
    unheld_looked_up: bool = False,
) -> int:
    """Finish every pending intent (see the module docstring); returns how many were finished.

    :param may_expire: asked with the superseded holding's ``remote`` before
        its judgement is expired (a judgement another instance owns is left alone).
    :param unheld_looked_up: the delivery looks up every judgement of a record
        it does not hold before sending it (after lost state), and expires all
        but one: intents of unheld records are left to that, which also finds
        judgements older than the intent.

    :raises exportkit.errors.TransientError: CTIA is unavailable; what is not
        finished stays in the log for the next attempt.
    """
    log = IntentLog(context)
    log.settle()
    pending = log.pending()
    if not pending:
        return 0
    context.logger.warning("finishing %d change(s) and withdrawal(s) an earlier run left unfinished", len(pending))
    held = context.holdings.get_many({i["source_id"] for i in pending})
    if unheld_looked_up:
        left = [i for i in pending if i["kind"] == "change" and i["previous"] is None and held.get(i["source_id"]) is None]
        log.discard(left)
        pending = [i for i in pending if i not in left]
    forward = [i for i in pending if i["kind"] == "change" and _held_judgement(held.get(i["source_id"])) == i["previous"]]
    stale = [i for i in pending if i["kind"] == "change" and i not in forward]
    withdrawals = [i for i in pending if i["kind"] == "withdrawal"]
    finished = _roll_forward(client, settings, context, log, forward, stats, may_expire)
    finished += _expire_stale(client, context, log, stale, held, stats)
    finished += _finish_withdrawals(client, context, log, withdrawals, stats)
    return finished


def _live_ids(client: CtiaClient, judgement_ids: list[str]) -> set[str]:
    """Which of these judgements are live now (one bulk read)."""
    now = utc_now()
    return {i for i, entity in read_judgements(client, set(judgement_ids)).items() if is_live(entity, now)}


def _roll_forward(
    client: CtiaClient,
    settings: CtiaSettings,
    context: SinkContext,
    log: IntentLog,
    intents: list[dict[str, Any]],
    stats: Counter[str],
    may_expire: Callable[[Mapping[str, Any] | None], bool],
) -> int:
    """Send the judgements again, expire what they supersede, record their holdings."""
    finished = 0
    per_intent = 2 if any(i.get("relationship") for i in intents) else 1
    size = max(1, settings.max_entities // per_intent)
    for start in range(0, len(intents), size):
        chunk = intents[start : start + size]
        body = bundle(
            settings,
            judgements=[i["judgement"] for i in chunk],
            relationships=[i["relationship"] for i in chunk if i.get("relationship")],
        )
        try:
            answers = client.import_bundle(body)
        except RequestRejected as exc:  # nothing of this chunk was created: nothing to finish
            context.logger.warning("CTIA refused to take back %d unfinished judgement(s): %s", len(chunk), exc)
            log.discard(chunk)
            continue
        crash_point("bundle-answered")
        by_original = {a.get("original_id"): a for a in answers}
        # One bulk read: is an "exists" judgement still live, and is the superseded one live yet?
        existing = [a["id"] for a in answers if a.get("result") == "exists" and a.get("id")]
        live = _live_ids(client, existing + [i["previous"] for i in chunk if i["previous"]])
        done = []
        for intent in chunk:
            answer = by_original.get(intent["judgement"]["id"]) or {}
            if answer.get("result") not in ("created", "exists") or not answer.get("id"):
                if answer.get("result") == "error":
                    done.append(intent)  # never created: the record is sent again like any other
                continue
            new_id = answer["id"]
            if answer["result"] == "exists" and new_id not in live:
                # Expired since (by another tool): nothing to finish; the record's next
                # send steps to its next generation.
                stats["recovered_not_live"] += 1
                done.append(intent)
                continue
            stats[f"recovered_{answer['result']}"] += 1
            previous = intent["previous"]
            if previous and previous != new_id and previous in live and may_expire(intent.get("previous_remote")):
                _expire(client, previous, f"superseded: indicator {intent['source_id']} changed in ThreatQ", stats, context)
            remote: dict[str, Any] = {
                **(intent.get("remote_extra") or {}),
                "judgement_id": new_id, "xid": intent["xid"], "generation": intent["generation"],
            }
            relationship = intent.get("relationship")
            if relationship:
                link = by_original.get(relationship["id"]) or {}
                if link.get("result") not in ("created", "exists"):
                    remote["feed_linked"] = False
            # Recorded before the intent leaves the log: a crash in between finds it settled.
            context.holdings.put_durable(intent["source_id"], intent["content_hash"], remote)
            done.append(intent)
            finished += 1
        log.discard(done)
    return finished


def _expire_stale(client: CtiaClient, context: SinkContext, log: IntentLog, intents: list[dict[str, Any]], held: Mapping[str, Holding], stats: Counter[str]) -> int:
    """Judgements created for a version the record has since left: expire them if they exist."""
    for intent in intents:
        keep = _held_judgement(held.get(intent["source_id"]))
        now = utc_now()
        for judgement in client.by_external_id("judgement", intent["xid"]):
            if judgement.get("id") and judgement["id"] != keep and is_live(judgement, now):
                _expire(client, judgement["id"], f"superseded: indicator {intent['source_id']} changed in ThreatQ", stats, context)
    log.discard(intents)  # expiring again after a crash here does no harm
    return len(intents)


def _finish_withdrawals(client: CtiaClient, context: SinkContext, log: IntentLog, intents: list[dict[str, Any]], stats: Counter[str]) -> int:
    """Expire again, then forget the holding (which settles the intent even if the process dies next)."""
    for intent in intents:
        _expire(client, intent["judgement_id"], intent["reason"], stats, context)
        # A later comeback of this record must not map onto the expired XID.
        context.store.set_durable(generation_key(intent["source_id"]), int(intent["generation"]) + 1)
        context.holdings.drop_durable(intent["source_id"])
    log.discard(intents)
    return len(intents)
