"""Delivery: batches of records -> bundle imports; changes and withdrawals -> judgement expiry.

Contract with the engine (see :mod:`exportkit.hookspecs`):

* Each live record becomes one judgement (:func:`~exportkit_ctia.mapping.map_judgement`),
  sent in bundles of at most ``max_entities`` entities (judgements plus, with
  a feed, the ``element-of`` relationships of those whose disposition is in
  ``feed_dispositions``); when a batch needs several bundles, up to
  ``in_flight`` are posted at once, and their answers are applied in bundle
  order, exactly as if they had been sent one by one (:mod:`exportkit_ctia.bundles`).
  CTIA's per-entity answer becomes the record's outcome: ``created`` -> accepted with remote
  ``{"judgement_id", "xid", "generation"}``; ``error`` -> rejected with CTIA's text.
* ``exists`` counts only when that judgement is live: the ``exists`` answers
  of a bundle are read back in bulk (:mod:`exportkit_ctia.liveness`), and a
  record whose judgement was expired (by us before a state reset, or by
  another tool) is sent again as its next generation (a new XID), up to
  :data:`MAX_GENERATION_STEPS` times. When liveness cannot be read now, the
  record is deferred, never accepted.
* After lost state (a state reset; :func:`~exportkit_ctia.ownership.detect_lost_state`),
  each record the sink does not hold is first looked up in CTIA by its record
  XID: a live judgement of its current version is kept, otherwise the first
  unused generation is sent, and every other live judgement of the record
  that is ours is expired once the new verdict is live.
* Judgement XIDs carry this instance's namespace (``context.namespace``), so
  another instance's judgements are never taken through ``exists``. The sink
  expires only judgements it created (:mod:`exportkit_ctia.ownership`); one
  held under another instance's XID is left to its owner (counted as
  ``left_to_owner``).
* A record the sink held under another judgement (it changed, or turned
  Whitelisted) has the old judgement expired *after* the new one exists, so
  the observable is never without a verdict. An expiry that cannot be made now
  is queued in the store (``pending_expiries``) and retried at the next open
  and at close.
* A withdrawal expires the held judgement (when it is this instance's); 404 counts as done
  (:mod:`exportkit_ctia.withdrawals`).
* Every judgement about to be created and every withdrawal is written to the
  intent log (:mod:`exportkit_ctia.intents`) durably *before* its request
  goes out, so a run killed between two steps is finished by the next open.
* Unavailable or rate-limited beyond the cap: the rest of the batch is
  deferred (nothing lost: a re-sent judgement maps to the same XID and CTIA
  answers ``exists``). After ``max_failed_batches`` such batches in a row the
  sink stops trying for the run: the next call raises
  :class:`~exportkit.errors.TransientError`, so the engine defers that batch
  and everything after it at once (exit 3, checkpoint held). A whole-request 400 dead-letters that chunk's records.
* In a dry run, records are mapped and validated only.
"""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Sequence
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from exportkit.context import SinkContext
from exportkit.crashpoints import crash_point
from exportkit.errors import TransientError
from exportkit.records import Indicator
from exportkit.results import BatchResult, Withdrawal
from exportkit_ctia import expiry_marks
from exportkit_ctia.client import CtiaClient, RequestRejected
from exportkit_ctia.intents import IntentLog, generation_key
from exportkit_ctia.breaker import Breaker
from exportkit_ctia.liveness import is_live, read_judgements, utc_now
from exportkit_ctia.mapping import OBSERVABLE_TYPES, MappedJudgement, Unmappable, map_judgement, unsupported_type
from exportkit_ctia.recovery import look_up_unheld
from exportkit_ctia.ownership import RECOVER_KEY, is_own
from exportkit_ctia.schema import entity_errors
from exportkit_ctia.settings import CtiaSettings
from exportkit_ctia.withdrawals import expire_withdrawn
from exportkit_ctia.bundles import answer_error_text, import_bundles

__all__ = ["Delivery", "PENDING_KEY", "MAX_GENERATION_STEPS"]

PENDING_KEY = "pending_expiries"
#: how many expired generations one write steps over before it defers the record
MAX_GENERATION_STEPS = 8


class Delivery:
    """Sends and expires judgements for one run of one sink.

    :param settings: the sink settings.
    :param client: the CTIA client (``None`` in a dry run).
    :param indicator_id: the feed indicator's long id, when a feed is set.
    """

    def __init__(self, settings: CtiaSettings, client: CtiaClient | None, *, indicator_id: str | None = None) -> None:
        self.settings = settings
        self.client = client
        self.indicator_id = indicator_id
        self.chunk_entities = settings.max_entities
        #: counts for the run report
        self.stats: Counter[str] = Counter()
        #: stops the sink trying for the rest of the run after repeated failures
        self.breaker = Breaker(settings.max_failed_batches)
        #: source id -> live judgements of ours found for an unheld record, to expire once its verdict is live
        self.orphans: dict[str, list[str]] = {}
        #: look unheld records up in this run even when the store does not say so (lost state undecided)
        self.look_up_unheld = False
        #: threads for bundle posts and expiries in flight, made when first needed (:meth:`workers`); ended by :meth:`close`
        self.pool: ThreadPoolExecutor | None = None
        #: expiries collected inside :meth:`expiring_together`, sent when it ends; None outside it
        self._collected: list[tuple[str, str, bool]] | None = None

    def workers(self) -> ThreadPoolExecutor:
        """The threads requests in flight run on (``in_flight`` of them)."""
        if self.pool is None:
            self.pool = ThreadPoolExecutor(max_workers=self.settings.in_flight, thread_name_prefix="exportkit-ctia-post")
        return self.pool

    def close(self) -> None:
        """Wait for bundle posts still running (answers no longer wanted) and end their threads."""
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None

    # --- mapping -------------------------------------------------------------------

    def _generation(self, record: Indicator, context: SinkContext, stored: dict[str, Any]) -> int:
        """Which judgement version this record is at (see :func:`~exportkit_ctia.mapping.judgement_xid`).

        :param stored: the batch's generation keys read from the store (:meth:`_stored_generations`).
        """
        held = context.held(record)
        remote = dict(held.remote or {}) if held is not None else {}
        if "judgement_id" in remote:
            current = int(remote.get("generation", 0))
            return current if held.content_hash == record.content_hash else current + 1  # type: ignore[union-attr]
        return int(stored.get(generation_key(record.source_id), 0) or 0)

    @staticmethod
    def _stored_generations(records: Sequence[Indicator], context: SinkContext) -> dict[str, Any]:
        """The generations withdrawals left for records not held now, in one read for the batch."""
        keys = []
        for record in records:
            held = context.held(record)
            if held is None or "judgement_id" not in (held.remote or {}):
                keys.append(generation_key(record.source_id))
        if not keys:
            return {}
        get_many = getattr(context.store, "get_many", None)  # a test's own store may lack it
        if get_many is None:
            return {key: value for key in keys if (value := context.store.get(key)) is not None}
        return dict(get_many(keys))

    def map(self, records: Sequence[Indicator], context: SinkContext, result: BatchResult) -> list[MappedJudgement]:
        """Map and validate; skipped and invalid records get their outcome in ``result``."""
        mapped = []
        # Most collections hold types CTIM has no observable for: those are skipped before any look-up.
        unsupported = [r for r in records if r.type not in OBSERVABLE_TYPES]
        for record in unsupported:
            result.skip(record, unsupported_type(record.type))
            self._expire_if_held(record, context)
        self.stats["skipped"] += len(unsupported)
        if unsupported:
            records = [r for r in records if r.type in OBSERVABLE_TYPES]
        stored = self._stored_generations(records, context)
        for record in records:
            try:
                judgement = map_judgement(record, self.settings, context.now, generation=self._generation(record, context, stored),
                                          namespace=context.namespace)
            except Unmappable as exc:
                result.skip(record, str(exc))
                self.stats["skipped"] += 1
                self._expire_if_held(record, context)
                continue
            problems = entity_errors("NewJudgement", judgement.body)
            if problems:
                result.reject(record, "the judgement would be invalid: " + "; ".join(problems[:3]))
                self.stats["invalid"] += 1
                continue
            mapped.append(judgement)
        return mapped

    # --- ownership --------------------------------------------------------------------

    def _expire_held(self, remote: Any, reason: str, context: SinkContext, *, urgent: bool = False) -> None:
        """Expire the held judgement when it is this instance's; leave another instance's to its owner."""
        judgement_id = (remote or {}).get("judgement_id")
        if not judgement_id:
            return
        if not is_own(self.settings, remote, context):
            self.left_to_owner(remote, context)
            return
        self.expire(judgement_id, reason, context, urgent=urgent)

    def left_to_owner(self, remote: Any, context: SinkContext) -> None:
        """Count and log a judgement held under another instance's XID: it stays live for its owner."""
        self.stats["left_to_owner"] += 1
        context.logger.warning("judgement %s was created by another instance (XID %s); it is left live for its owner", remote.get("judgement_id"), remote.get("xid"))

    def _expire_if_held(self, record: Indicator, context: SinkContext) -> None:
        """A held record that can no longer be sent (expired, or now invalid) must not stay live.

        The engine routes expired records to the withdraw hook; this covers
        the rest (a value that became invalid, or an engine that did not).
        """
        held = context.held(record)
        previous = (held.remote or {}).get("judgement_id") if held is not None else None
        if previous and self.client is not None and not context.dry_run:
            if not is_own(self.settings, held.remote, context):  # type: ignore[union-attr]
                self.left_to_owner(held.remote, context)  # type: ignore[union-attr]
                return
            # The record is skipped, so the holding keeps naming this judgement: mark it
            # so that neither this path nor a later withdrawal expires it again.
            if self.expire(previous, f"withdrawn: indicator {record.source_id} can no longer be exported", context):
                expiry_marks.mark(context.store, previous)

    # --- writing --------------------------------------------------------------------

    def write(self, records: Sequence[Indicator], context: SinkContext) -> BatchResult:
        """Deliver one batch; returns every record's outcome.

        :raises TransientError: the sink stopped trying for this run (see ``max_failed_batches``).
        """
        self.breaker.begin()
        try:
            return self._write(records, context)
        finally:
            self._batch_done(context)

    def _batch_done(self, context: SinkContext) -> None:
        if self.breaker.end(context.logger):
            self.stats["stopped_after_failures"] = self.breaker.failed_batches

    def _write(self, records: Sequence[Indicator], context: SinkContext) -> BatchResult:
        result = BatchResult()
        mapped = self.map(records, context, result)
        if context.dry_run or self.client is None:
            self.stats["dry_run_valid"] += len(mapped)
            return result
        if self.look_up_unheld or context.store.get(RECOVER_KEY):
            mapped = look_up_unheld(self, mapped, result, context)
        self.send(mapped, result, context, next_generation=self._next_generation, accept=self._accept)
        return result

    def send(self, judgements: list[Any], result: BatchResult, context: SinkContext, *,
             next_generation: Callable[[Any, SinkContext], Any], accept: Callable[[Any, dict[str, Any], BatchResult, SinkContext], None]) -> None:
        """Import ``judgements`` until each has a live judgement in CTIA, stepping over expired generations.

        :param judgements: :class:`~exportkit_ctia.mapping.MappedJudgement` or
            anything with the same ``body``, ``xid``, ``generation``,
            ``transient_id`` and ``source_id``.
        :param next_generation: the same judgement under its next generation's XID.
        :param accept: called once per judgement that is live in CTIA, with CTIA's answer.
        """
        for _ in range(MAX_GENERATION_STEPS):
            answered = import_bundles(self, judgements, result, context)
            judgements = self._settle(answered, result, context, next_generation, accept)
            if not judgements:
                return
        for judgement in judgements:
            result.defer(judgement.source_id, f"CTIA holds {MAX_GENERATION_STEPS} expired generations of this judgement; trying again next run")
        self.stats["deferred"] += len(judgements)

    def _settle(self, answered: list[tuple[Any, dict[str, Any]]], result: BatchResult, context: SinkContext,
                next_generation: Callable[[Any, SinkContext], Any], accept: Callable[[Any, dict[str, Any], BatchResult, SinkContext], None]) -> list[Any]:
        """Accept what is live; returns the next generation of each judgement whose ``exists`` one is not."""
        existing = [answer["id"] for _, answer in answered if answer.get("result") == "exists"]
        try:
            found = read_judgements(self.client, existing)  # type: ignore[arg-type]
        except TransientError as exc:
            self.breaker.failed(exc)
            found = None
            context.logger.warning("could not read back %d existing judgement(s); their records are deferred: %s", len(existing), exc)
        now = utc_now()
        again = []
        dead: list[dict[str, Any]] = []  # intents of expired judgements: nothing to finish
        # The judgements these supersede are expired together once every one of them is
        # accepted (each after its successor exists), up to in_flight at a time.
        with self.expiring_together(context):
            for judgement, answer in answered:
                if answer.get("result") == "exists":
                    if found is None:
                        result.defer(judgement.source_id, "CTIA answered exists, and whether that judgement is live could not be read now")
                        self.stats["deferred"] += 1
                        continue
                    if not is_live(found.get(answer["id"]), now):
                        self.stats["exists_not_live"] += 1
                        dead.append({"kind": "change", "source_id": judgement.source_id, "xid": judgement.xid})
                        again.append(next_generation(judgement, context))
                        continue
                accept(judgement, answer, result, context)
        IntentLog(context).discard(dead)
        return again

    def _next_generation(self, judgement: MappedJudgement, context: SinkContext) -> MappedJudgement:
        return map_judgement(judgement.record, self.settings, context.now, generation=judgement.generation + 1, namespace=context.namespace)

    def _accept(self, judgement: MappedJudgement, answer: dict[str, Any], result: BatchResult, context: SinkContext) -> None:
        """A live judgement for the record: hold it, and expire the one held before (when it is ours)."""
        record = judgement.record
        self.stats[str(answer["result"])] += 1
        remote = self.remote(judgement, answer, context)
        if record.expires_at is not None:  # what a repair needs to keep (see exportkit_ctia.repair)
            remote["until"] = judgement.body["valid_time"]["end_time"]
        held = context.held(record)
        previous = (held.remote or {}).get("judgement_id") if held is not None else None
        if previous and previous != answer["id"]:
            why = "whitelisted in ThreatQ" if record.is_whitelisted else "changed in ThreatQ"
            # A Whitelisted record's old verdict is the one to end first (it may sit in a blocklist feed).
            self._expire_held(held.remote, f"superseded: indicator {record.source_id} {why}", context, urgent=record.is_whitelisted)  # type: ignore[union-attr]
            expiry_marks.unmark(context.store, previous)  # no holding names it any more
        for orphan in self.orphans.pop(record.source_id, []):
            if orphan != answer["id"]:
                self.expire(orphan, f"superseded: indicator {record.source_id} (held before this exporter's state was reset)", context)
        result.accept(record, remote=remote)

    def remote(self, judgement: Any, answer: dict[str, Any], context: SinkContext) -> dict[str, Any]:
        """The remote ids to hold for a live judgement (and whether its feed link failed)."""
        remote: dict[str, Any] = {
            "judgement_id": answer["id"], "xid": judgement.xid, "generation": judgement.generation,
            "reason_chars": len(judgement.body.get("reason", "")),
        }
        if answer.get("joins_feed"):
            link = answer.get("link")
            if link is None or link.get("result") not in ("created", "exists"):
                # The judgement is live; only its feed membership failed. Keep
                # it (so a later change or withdrawal can expire it) and say so.
                remote["feed_linked"] = False
                self.stats["feed_link_errors"] += 1
                context.logger.warning("feed link of indicator %s failed: %s", judgement.source_id, answer_error_text(link or {}))
        return remote

    # --- expiring -----------------------------------------------------------------------

    def expire(self, judgement_id: str, reason: str, context: SinkContext, *, urgent: bool = False) -> bool:
        """Expire one judgement now, or queue it in the store when CTIA cannot take it now.

        Each judgement is expired once (CTIA appends the reason on every
        expiry): one marked as expired, or already queued, is left alone.
        An ``urgent`` expiry goes to the front of the queue. Returns False
        only when CTIA refused the expiry.
        """
        assert self.client is not None
        if expiry_marks.is_marked(context.store, judgement_id):
            return True
        if self._collected is not None:  # inside expiring_together: sent when it ends
            if all(collected != judgement_id for collected, _, _ in self._collected):
                self._collected.append((judgement_id, reason, urgent))
            return True
        try:
            self.breaker.raise_if_open()
            outcome: bool | Exception = self.client.expire_judgement(judgement_id, reason)
        except (TransientError, RequestRejected) as exc:
            outcome = exc
        return self._expired(judgement_id, reason, urgent, outcome, context)

    def _expired(self, judgement_id: str, reason: str, urgent: bool, outcome: bool | Exception, context: SinkContext) -> bool:
        """Apply one expiry's outcome (``expire_judgement``'s answer or its error); False only when CTIA refused it."""
        if isinstance(outcome, TransientError):
            self.breaker.failed(outcome)
            pending = list(context.store.get(PENDING_KEY, []) or [])
            if all(queued != judgement_id for queued, _ in pending):
                context.logger.warning("expiry of %s queued for later: %s", judgement_id, outcome)
                pending.insert(0 if urgent else len(pending), [judgement_id, reason])
                context.store.set(PENDING_KEY, pending)
                self.stats["expiries_queued"] += 1
            return True
        if isinstance(outcome, RequestRejected):
            context.logger.warning("CTIA refused to expire %s: %s", judgement_id, outcome)
            self.stats["expiry_errors"] += 1
            return False
        if isinstance(outcome, BaseException):
            raise outcome
        crash_point("judgement-expired")
        self.stats["expired" if outcome else "expired_already_gone"] += 1
        return True

    @contextmanager
    def expiring_together(self, context: SinkContext) -> Iterator[None]:
        """Inside, :meth:`expire` collects instead of sending; when the block ends normally the
        expiries are sent, the urgent ones first, up to ``in_flight`` at once, and their outcomes
        applied here in that order. A block left by an exception sends none: the intent log
        finishes them at the next open."""
        self._collected = []
        try:
            yield
            collected = self._collected
        finally:
            self._collected = None
        if collected:
            self._expire_all(sorted(collected, key=lambda c: not c[2]), context)  # stable: urgent first

    def _expire_all(self, expiries: list[tuple[str, str, bool]], context: SinkContext) -> None:
        assert self.client is not None
        client, breaker = self.client, self.breaker

        def send(judgement_id: str, reason: str) -> bool | Exception:
            try:
                breaker.raise_if_open()
                return client.expire_judgement(judgement_id, reason)
            except (TransientError, RequestRejected) as exc:
                return exc
            except Exception as exc:  # handed to the sink thread, raised there in order
                return exc

        if len(expiries) == 1 or self.settings.in_flight == 1:
            outcomes = (send(j, r) for j, r, _ in expiries)
        else:
            futures = [self.workers().submit(send, j, r) for j, r, _ in expiries]
            outcomes = (f.result() for f in futures)
        for (judgement_id, reason, urgent), outcome in zip(expiries, outcomes):
            self._expired(judgement_id, reason, urgent, outcome, context)

    def flush_pending(self, context: SinkContext, limit: int | None = None) -> int:
        """Retry queued expiries in queue order, at most ``limit`` of them; returns how many are still queued."""
        pending = list(context.store.get(PENDING_KEY, []) or [])
        if not pending or self.client is None or context.dry_run or self.breaker.stopped is not None:
            return len(pending)
        left = pending[limit:] if limit is not None else []
        for index, (judgement_id, reason) in enumerate(pending[:limit]):
            try:
                done = self.client.expire_judgement(judgement_id, reason)
                crash_point("judgement-expired")
            except TransientError:
                left = pending[index:]
                break
            except RequestRejected as exc:
                context.logger.warning("CTIA refused to expire %s: %s", judgement_id, exc)
                continue
            self.stats["expired" if done else "expired_already_gone"] += 1
        if left:
            context.store.set(PENDING_KEY, left)
        else:
            context.store.delete(PENDING_KEY)
        return len(left)

    def verify(self, source_ids: Sequence[str], context: SinkContext) -> BatchResult:
        """Verify held judgements and re-create those no longer live (:mod:`exportkit_ctia.repair`).

        :raises TransientError: the sink stopped trying for this run (see ``max_failed_batches``).
        """
        from exportkit_ctia.repair import verify

        self.breaker.begin()
        try:
            return verify(self, source_ids, context)
        finally:
            self._batch_done(context)

    def withdraw(self, withdrawals: Sequence[Withdrawal], context: SinkContext) -> BatchResult:
        """Expire the judgements of records that must stop being live.

        :raises TransientError: the sink stopped trying for this run (see ``max_failed_batches``).
        """
        self.breaker.begin()
        try:
            return expire_withdrawn(self, withdrawals, context)
        finally:
            self._batch_done(context)
