"""Delivery: batches of records -> bundle imports; changes and withdrawals -> judgement expiry.

Contract with the engine (see :mod:`exportkit.hookspecs`):

* Each live record becomes one judgement (:func:`~exportkit_ctia.mapping.map_judgement`),
  sent in bundles of at most ``max_entities`` entities (judgements plus, with
  a feed, the ``element-of`` relationships of those whose disposition is in
  ``feed_dispositions``); when a batch needs several bundles, up to
  ``in_flight`` are posted at once, and their answers are applied in bundle
  order, exactly as if they had been sent one by one. CTIA's per-entity answer
  becomes the record's outcome: ``created``/``exists`` -> accepted with remote
  ``{"judgement_id", "xid", "generation"}``; ``error`` -> rejected with CTIA's text.
* A record the sink held under another judgement (it changed, or turned
  Whitelisted) has the old judgement expired *after* the new one exists, so
  the observable is never without a verdict. An expiry that cannot be made now
  is queued in the store (``pending_expiries``) and retried at the next open
  and at close.
* A withdrawal expires the held judgement; 404 counts as done.
* Unavailable or rate-limited beyond the cap: the rest of the batch is
  deferred (nothing lost: a re-sent judgement maps to the same XID and CTIA
  answers ``exists``). A whole-request 400 dead-letters that chunk's records.
* In a dry run, records are mapped and validated only.
"""

from __future__ import annotations

from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Iterator, Sequence

from exportkit.context import SinkContext
from exportkit.errors import TransientError
from exportkit.records import Indicator
from exportkit.results import BatchResult, Withdrawal
from exportkit_ctia import expiry_marks
from exportkit_ctia.client import CtiaClient, RequestRejected
from exportkit_ctia.mapping import MappedJudgement, Unmappable, bundle, element_of, joins_feed, map_judgement
from exportkit_ctia.schema import entity_errors
from exportkit_ctia.settings import CtiaSettings

__all__ = ["Delivery", "PENDING_KEY"]

PENDING_KEY = "pending_expiries"


def _generation_key(source_id: str) -> str:
    return f"generation:{source_id}"


def _error_text(result: dict[str, Any]) -> str:
    error = result.get("error")
    if isinstance(error, dict):
        error = error.get("type") or str(error)
    text = " ".join(str(part) for part in (error, result.get("msg")) if part)
    return text[:1000] or "unknown error"


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
        self._pool: ThreadPoolExecutor | None = None

    def close(self) -> None:
        """Wait for bundle posts still running (answers no longer wanted) and end their threads."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

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
        return int(stored.get(_generation_key(record.source_id), 0) or 0)

    @staticmethod
    def _stored_generations(records: Sequence[Indicator], context: SinkContext) -> dict[str, Any]:
        """The generations withdrawals left for records not held now, in one read for the batch."""
        keys = []
        for record in records:
            held = context.held(record)
            if held is None or "judgement_id" not in (held.remote or {}):
                keys.append(_generation_key(record.source_id))
        if not keys:
            return {}
        get_many = getattr(context.store, "get_many", None)  # a test's own store may lack it
        if get_many is None:
            return {key: value for key in keys if (value := context.store.get(key)) is not None}
        return dict(get_many(keys))

    def map(self, records: Sequence[Indicator], context: SinkContext, result: BatchResult) -> list[MappedJudgement]:
        """Map and validate; skipped and invalid records get their outcome in ``result``."""
        mapped = []
        stored = self._stored_generations(records, context)
        for record in records:
            try:
                judgement = map_judgement(record, self.settings, context.now, generation=self._generation(record, context, stored))
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

    def _expire_if_held(self, record: Indicator, context: SinkContext) -> None:
        """A held record that can no longer be sent (expired, or now invalid) must not stay live.

        The engine routes expired records to the withdraw hook; this covers
        the rest (a value that became invalid, or an engine that did not).
        """
        held = context.held(record)
        previous = (held.remote or {}).get("judgement_id") if held is not None else None
        if previous and self.client is not None and not context.dry_run:
            # The record is skipped, so the holding keeps naming this judgement: mark it
            # so that neither this path nor a later withdrawal expires it again.
            if self.expire(previous, f"withdrawn: indicator {record.source_id} can no longer be exported", context):
                expiry_marks.mark(context.store, previous)

    # --- writing --------------------------------------------------------------------

    def write(self, records: Sequence[Indicator], context: SinkContext) -> BatchResult:
        """Deliver one batch; returns every record's outcome."""
        result = BatchResult()
        mapped = self.map(records, context, result)
        if context.dry_run or self.client is None:
            self.stats["dry_run_valid"] += len(mapped)
            return result
        per_record = 2 if self.indicator_id else 1
        start = 0
        while start < len(mapped):
            size = max(1, self.chunk_entities // per_record)
            chunks = [mapped[i : i + size] for i in range(start, len(mapped), size)]
            posts = self._post(chunks)
            try:
                for chunk, answers in posts:
                    if isinstance(answers, TransientError):  # Deferred, or the token endpoint being down
                        for judgement in mapped[start:]:
                            result.defer(judgement.record, str(answers))
                        self.stats["deferred"] += len(mapped) - start
                        context.logger.warning("CTIA cannot take more now, %d record(s) deferred: %s", len(mapped) - start, answers)
                        return result
                    if isinstance(answers, RequestRejected):
                        exc = answers
                        if exc.max_entities and per_record <= exc.max_entities < self.chunk_entities:
                            context.logger.warning("CTIA takes at most %d entities per bundle; sending smaller bundles", exc.max_entities)
                            self.chunk_entities = exc.max_entities
                            break  # the rest again, in smaller bundles (a bundle sent meanwhile answers "exists")
                        for judgement in chunk:
                            result.reject(judgement.record, str(exc))
                        self.stats["rejected"] += len(chunk)
                        start += len(chunk)
                        continue
                    if isinstance(answers, BaseException):
                        raise answers
                    self._apply(chunk, answers, result, context)
                    start += len(chunk)
            finally:
                posts.close()
        return result

    def _post(self, chunks: list[list[MappedJudgement]]) -> Iterator[tuple[list[MappedJudgement], Any]]:
        """Post each chunk as a bundle; yield ``(chunk, answers or the exception)`` in chunk order.

        The first bundle goes alone: when CTIA is failing or out of budget, a
        batch costs one round of retries (and the outcomes are those of posting
        one by one), not ``in_flight`` rounds. After it, up to ``in_flight``
        posts run at once; the next is started only when the oldest answer is
        taken. Closing the generator cancels the posts not started yet.
        """
        assert self.client is not None
        client = self.client

        def send(chunk: list[MappedJudgement]) -> Any:
            judgements = [m.body for m in chunk]
            indicator_id = self.indicator_id
            relationships = [element_of(m, indicator_id, self.settings) for m in self._feed_members(chunk)] if indicator_id else []
            try:
                return client.import_bundle(bundle(self.settings, judgements=judgements, relationships=relationships))
            except Exception as exc:  # handed to the caller in order, raised or handled there
                return exc

        yield chunks[0], send(chunks[0])
        if len(chunks) == 1 or self.settings.in_flight == 1:
            for chunk in chunks[1:]:
                yield chunk, send(chunk)
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self.settings.in_flight, thread_name_prefix="exportkit-ctia-post")
        queued: list[tuple[list[MappedJudgement], Future[Any]]] = []
        upcoming = iter(chunks[1:])
        try:
            for chunk in upcoming:
                queued.append((chunk, self._pool.submit(send, chunk)))
                if len(queued) < self.settings.in_flight:
                    continue
                oldest, future = queued.pop(0)
                yield oldest, future.result()
            while queued:
                oldest, future = queued.pop(0)
                yield oldest, future.result()
        finally:
            for _chunk, future in queued:
                future.cancel()

    def _feed_members(self, chunk: list[MappedJudgement]) -> list[MappedJudgement]:
        """The judgements of ``chunk`` that join the feed (none without a feed)."""
        if not self.indicator_id:
            return []
        return [m for m in chunk if joins_feed(m, self.settings)]

    def _apply(self, chunk: list[MappedJudgement], answers: list[dict[str, Any]], result: BatchResult, context: SinkContext) -> None:
        by_original = {a.get("original_id"): a for a in answers}
        for judgement in chunk:
            record = judgement.record
            answer = by_original.get(judgement.transient_id)
            if answer is None:
                result.defer(record, "CTIA's bundle answer did not mention this judgement")
                self.stats["deferred"] += 1
                continue
            if answer.get("result") not in ("created", "exists") or not answer.get("id"):
                result.reject(record, f"CTIA refused the judgement: {_error_text(answer)}")
                self.stats["rejected"] += 1
                continue
            self.stats[str(answer["result"])] += 1
            remote: dict[str, Any] = {"judgement_id": answer["id"], "xid": judgement.xid, "generation": judgement.generation}
            if self.indicator_id and joins_feed(judgement, self.settings):
                link = by_original.get(element_of(judgement, self.indicator_id, self.settings)["id"])
                if link is None or link.get("result") not in ("created", "exists"):
                    # The judgement is live; only its feed membership failed. Keep
                    # it (so a later change or withdrawal can expire it) and say so.
                    remote["feed_linked"] = False
                    self.stats["feed_link_errors"] += 1
                    context.logger.warning("feed link of indicator %s failed: %s", record.source_id, _error_text(link or {}))
            held = context.held(record)
            previous = (held.remote or {}).get("judgement_id") if held is not None else None
            if previous and previous != answer["id"]:
                why = "whitelisted in ThreatQ" if record.is_whitelisted else "changed in ThreatQ"
                # A Whitelisted record's old verdict is the one to end first (it may sit in a blocklist feed).
                self.expire(previous, f"superseded: indicator {record.source_id} {why}", context, urgent=record.is_whitelisted)
                expiry_marks.unmark(context.store, previous)  # no holding names it any more
            result.accept(record, remote=remote)

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
        try:
            done = self.client.expire_judgement(judgement_id, reason)
        except TransientError as exc:
            pending = list(context.store.get(PENDING_KEY, []) or [])
            if all(queued != judgement_id for queued, _ in pending):
                context.logger.warning("expiry of %s queued for later: %s", judgement_id, exc)
                pending.insert(0 if urgent else len(pending), [judgement_id, reason])
                context.store.set(PENDING_KEY, pending)
                self.stats["expiries_queued"] += 1
            return True
        except RequestRejected as exc:
            context.logger.warning("CTIA refused to expire %s: %s", judgement_id, exc)
            self.stats["expiry_errors"] += 1
            return False
        self.stats["expired" if done else "expired_already_gone"] += 1
        return True

    def flush_pending(self, context: SinkContext, limit: int | None = None) -> int:
        """Retry queued expiries in queue order, at most ``limit`` of them; returns how many are still queued."""
        pending = list(context.store.get(PENDING_KEY, []) or [])
        if not pending or self.client is None or context.dry_run:
            return len(pending)
        left = pending[limit:] if limit is not None else []
        for index, (judgement_id, reason) in enumerate(pending[:limit]):
            try:
                done = self.client.expire_judgement(judgement_id, reason)
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

    def withdraw(self, withdrawals: Sequence[Withdrawal], context: SinkContext) -> BatchResult:
        """Expire the judgements of records that must stop being live."""
        result = BatchResult()
        deferred_because: str | None = None
        for withdrawal in withdrawals:
            held = context.held(withdrawal.source_id)
            remote = dict(held.remote or {}) if held is not None else {}
            judgement_id = remote.get("judgement_id")
            if not judgement_id:
                result.accept(withdrawal)  # nothing of ours is live
                continue
            if context.dry_run or self.client is None:
                self.stats["dry_run_withdrawals"] += 1
                continue
            if deferred_because is not None:
                result.defer(withdrawal, deferred_because)
                continue
            if expiry_marks.is_marked(context.store, judgement_id):  # expired (or queued) already
                expiry_marks.unmark(context.store, judgement_id)
                context.store.set(_generation_key(withdrawal.source_id), int(remote.get("generation", 0)) + 1)
                self.stats["withdrawn"] += 1
                result.accept(withdrawal)
                continue
            why = "expired" if withdrawal.reason == "expired" else "removed from the ThreatQ collection"
            try:
                done = self.client.expire_judgement(judgement_id, f"withdrawn: indicator {withdrawal.source_id} {why}")
            except TransientError as exc:
                deferred_because = str(exc)
                result.defer(withdrawal, deferred_because)
                continue
            except RequestRejected as exc:
                result.reject(withdrawal, str(exc))
                continue
            # A later comeback of this record must not map onto the expired XID.
            context.store.set(_generation_key(withdrawal.source_id), int(remote.get("generation", 0)) + 1)
            self.stats["withdrawn" if done else "expired_already_gone"] += 1
            result.accept(withdrawal)
        self.stats["deferred"] += sum(1 for o in result if o.status == "deferred")
        return result
