"""Bundle imports: mapped judgements (with their feed links) to CTIA, in bundles, some in flight.

* Judgements go in bundles of at most ``max_entities`` entities (a judgement
  and, with a feed, its ``element-of`` relationship); when CTIA says it takes
  fewer, the rest goes again in smaller bundles.
* Each bundle's change intents are written durably before it is sent
  (:mod:`exportkit_ctia.intents`). The first bundle of a call goes alone;
  after it, up to ``in_flight`` are posted at once and their answers are
  applied in bundle order, exactly as if they had been sent one by one.
* CTIA's per-entity answer becomes the judgement's outcome: ``created`` and
  ``exists`` are returned for the caller to settle (liveness, acceptance);
  ``error`` rejects the record with CTIA's text; a missing answer defers it.
* CTIA unavailable or out of budget: the rest of the call is deferred and the
  sink's breaker counts a failed batch. A whole-bundle refusal rejects that
  bundle's records.
"""

from __future__ import annotations

from concurrent.futures import Future
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

from exportkit.context import SinkContext
from exportkit.crashpoints import crash_point
from exportkit.errors import TransientError
from exportkit.results import BatchResult
from exportkit_ctia.client import RequestRejected
from exportkit_ctia.intents import IntentLog, change_intent
from exportkit_ctia.mapping import MappedJudgement, bundle, element_of, joins_feed

if TYPE_CHECKING:
    from exportkit_ctia.delivery import Delivery

__all__ = ["import_bundles", "answer_error_text"]


def import_bundles(delivery: Delivery, mapped: list[Any], result: BatchResult, context: SinkContext) -> list[tuple[Any, dict[str, Any]]]:
    """Send ``mapped`` in bundles; returns the ``created``/``exists`` answers (other outcomes go to ``result``)."""
    assert delivery.client is not None
    answered: list[tuple[MappedJudgement, dict[str, Any]]] = []
    log = IntentLog(context)
    log.settle()
    intents: list[dict[str, Any]] = []
    per_record = 2 if delivery.indicator_id else 1
    start = 0
    while start < len(mapped):
        size = max(1, delivery.chunk_entities // per_record)
        chunks = [mapped[i : i + size] for i in range(start, len(mapped), size)]
        posts = _post(delivery, chunks, log, context)
        try:
            for chunk, answers, chunk_intents, never_left in posts:
                intents += chunk_intents
                if isinstance(answers, TransientError):  # Deferred, or the token endpoint being down
                    if never_left:  # the bundle never left: nothing to finish
                        log.discard(chunk_intents)
                    delivery.breaker.failed(answers)
                    for judgement in mapped[start:]:
                        result.defer(judgement.source_id, str(answers))
                    delivery.stats["deferred"] += len(mapped) - start
                    context.logger.warning("CTIA cannot take more now, %d record(s) deferred: %s", len(mapped) - start, answers)
                    start = len(mapped)
                    break
                if isinstance(answers, RequestRejected):
                    exc = answers
                    if exc.max_entities and per_record <= exc.max_entities < delivery.chunk_entities:
                        context.logger.warning("CTIA takes at most %d entities per bundle; sending smaller bundles", exc.max_entities)
                        delivery.chunk_entities = exc.max_entities
                        break  # the rest again, in smaller bundles (a bundle sent meanwhile answers "exists")
                    for judgement in chunk:
                        result.reject(judgement.source_id, str(exc))
                    delivery.stats["rejected"] += len(chunk)
                    start += len(chunk)
                    continue
                if isinstance(answers, BaseException):
                    raise answers
                crash_point("bundle-answered")
                answered += _answers(delivery, chunk, answers, result, context)
                start += len(chunk)
        finally:
            posts.close()
    # A refused judgement was never created: nothing to finish after a crash.
    log.discard(i for i in intents if getattr(result.get(i["source_id"]), "status", None) == "rejected")
    return answered


def _post(
    delivery: Delivery, chunks: list[list[Any]], log: IntentLog, context: SinkContext
) -> Generator[tuple[list[Any], Any, list[dict[str, Any]], bool], None, None]:
    """Post each chunk as a bundle; yield ``(chunk, answers or the exception, its intents, never left)`` in chunk order.

    Each bundle's change intents are written (in this thread) before it is
    sent. The first bundle goes alone: when CTIA is failing or out of
    budget, a batch costs one round of retries (and the outcomes are those
    of posting one by one), not ``in_flight`` rounds. After it, up to
    ``in_flight`` posts run at once; the next is started only when the
    oldest answer is taken. Closing the generator cancels the posts not
    started yet. "Never left" is known only for a bundle sent alone; for
    the others it is False, so their intents stay for recovery to settle.
    """
    assert delivery.client is not None
    client = delivery.client

    def prepare(chunk: list[Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        judgements = [m.body for m in chunk]
        indicator_id = delivery.indicator_id
        relationships = [element_of(m, indicator_id, delivery.settings) for m in _feed_members(delivery, chunk)] if indicator_id else []
        chunk_intents = _record_intents(delivery, log, chunk, relationships, context)
        return bundle(delivery.settings, judgements=judgements, relationships=relationships), chunk_intents

    def send(body: dict[str, Any]) -> Any:
        try:
            return client.import_bundle(body)
        except Exception as exc:  # handed to the caller in order, raised or handled there
            return exc

    def alone(chunk: list[Any]) -> tuple[list[Any], Any, list[dict[str, Any]], bool]:
        body, chunk_intents = prepare(chunk)
        spent = client.budget.spent
        answers = send(body)
        return chunk, answers, chunk_intents, client.budget.spent == spent

    yield alone(chunks[0])
    if len(chunks) == 1 or delivery.settings.in_flight == 1:
        for chunk in chunks[1:]:
            yield alone(chunk)
        return
    pool = delivery.workers()
    queued: list[tuple[list[Any], list[dict[str, Any]], Future[Any]]] = []
    try:
        for chunk in chunks[1:]:
            body, chunk_intents = prepare(chunk)
            queued.append((chunk, chunk_intents, pool.submit(send, body)))
            if len(queued) < delivery.settings.in_flight:
                continue
            oldest, oldest_intents, future = queued.pop(0)
            yield oldest, future.result(), oldest_intents, False
        while queued:
            oldest, oldest_intents, future = queued.pop(0)
            yield oldest, future.result(), oldest_intents, False
    finally:
        for _chunk, _intents, future in queued:
            future.cancel()


def _record_intents(delivery: Delivery, log: IntentLog, chunk: list[Any], relationships: list[dict[str, Any]], context: SinkContext) -> list[dict[str, Any]]:
    """Write the change intents of one bundle durably, before it is sent."""
    links = {r["source_ref"]: r for r in relationships}
    intents = []
    for judgement in chunk:
        held = context.held(judgement.source_id)
        intents.append(change_intent(
            judgement.source_id, _content_hash(judgement), judgement, held.remote if held is not None else None,
            links.get(judgement.transient_id), _remote_extra(judgement),
        ))
    log.add(intents)
    return intents


def _remote_extra(judgement: Any) -> dict[str, Any]:
    """What :meth:`remote` and :meth:`_accept` add to a holding beyond the ids (for a recovery to record)."""
    extra: dict[str, Any] = {"reason_chars": len(judgement.body.get("reason", ""))}
    record = getattr(judgement, "record", None)
    until = (getattr(judgement, "held", None) or {}).get("until")
    if (record is not None and record.expires_at is not None) or until:
        extra["until"] = judgement.body["valid_time"]["end_time"]
    return extra


def _feed_members(delivery: Delivery, chunk: list[Any]) -> list[Any]:
    """The judgements of ``chunk`` that join the feed (none without a feed)."""
    if not delivery.indicator_id:
        return []
    return [m for m in chunk if joins_feed(m, delivery.settings)]


def _answers(delivery: Delivery, chunk: list[Any], answers: list[dict[str, Any]], result: BatchResult, context: SinkContext) -> list[tuple[Any, dict[str, Any]]]:
    """Pair each judgement with its answer; ``error`` and missing answers get their outcome here."""
    by_original = {a.get("original_id"): a for a in answers}
    out = []
    for judgement in chunk:
        record = judgement.source_id
        answer = by_original.get(judgement.transient_id)
        if answer is None:
            result.defer(record, "CTIA's bundle answer did not mention this judgement")
            delivery.stats["deferred"] += 1
            continue
        if answer.get("result") not in ("created", "exists") or not answer.get("id"):
            result.reject(record, f"CTIA refused the judgement: {answer_error_text(answer)}")
            delivery.stats["rejected"] += 1
            continue
        joins = bool(delivery.indicator_id) and joins_feed(judgement, delivery.settings)
        link = by_original.get(element_of(judgement, delivery.indicator_id, delivery.settings)["id"]) if joins else None  # type: ignore[arg-type]
        out.append((judgement, {**answer, "link": link, "joins_feed": joins}))
    return out


def answer_error_text(result: dict[str, Any]) -> str:
    """CTIA's error for one entity of a bundle answer, as text (at most 1,000 characters)."""
    error = result.get("error")
    if isinstance(error, dict):
        error = error.get("type") or str(error)
    text = " ".join(str(part) for part in (error, result.get("msg")) if part)
    return text[:1000] or "unknown error"


def _content_hash(judgement: Any) -> str:
    """The content hash of the record version a judgement (mapped or re-created) stands for."""
    record = getattr(judgement, "record", None)
    return str(record.content_hash if record is not None else judgement.content_hash)
