"""Which held judgements the instance may expire, and telling a state reset from a first run."""

from __future__ import annotations

import logging
from datetime import datetime, timezone

from exportkit.context import RunInfo, SinkContext
from exportkit_ctia.mapping import owner_key
from exportkit_ctia.ownership import OWNERS_KEY, RECOVER_KEY, detect_lost_state, is_own, remember_owner



class MemoryStore(dict):
    def set(self, key, value):
        self[key] = value

    def delete(self, key):
        self.pop(key, None)


class MemoryHoldings(dict):
    def get_many(self, source_ids):
        return {i: self[i] for i in source_ids if i in self}

EAST = "east\nthreatq tq.example.com A"


def context(namespace: str = EAST, store: MemoryStore | None = None) -> SinkContext:
    logger = logging.LoggerAdapter(logging.getLogger("test.ownership"), {})
    run = RunInfo("east", "r", "incremental", False, ("ctia",), datetime.now(timezone.utc), logger)
    return SinkContext(run, "ctia", None, store or MemoryStore(), MemoryHoldings(), logger, namespace=namespace)


def xid(settings, namespace: str) -> str:
    return f"{owner_key(settings, namespace)}-{'ab' * 32}"


def test_own_ids_legacy_ids_and_earlier_namespaces_are_ours_anothers_is_not(settings):
    s = settings()
    ctx = context()
    assert is_own(s, {"xid": xid(s, EAST)}, ctx)
    assert is_own(s, {"xid": "exportkit-judgement-" + "0f" * 32}, ctx)  # from before namespacing
    assert is_own(s, {"judgement_id": "x"}, ctx)  # from before XIDs were held
    assert not is_own(s, {"xid": xid(s, "west\nthreatq tq.example.com B")}, ctx)
    # The collection is renamed: what the instance wrote before stays its own.
    remember_owner(s, ctx)
    renamed = context("east\nthreatq tq.example.com A (renamed)", ctx.store)  # type: ignore[arg-type]
    remember_owner(s, renamed)
    assert is_own(s, {"xid": xid(s, EAST)}, renamed)
    assert len(renamed.store.get(OWNERS_KEY)) == 2


class FakeClient:
    def __init__(self, found: bool) -> None:
        self.found = found
        self.asked: list[str] = []

    def has_external_id(self, entity: str, xid: str) -> bool:
        self.asked.append(xid)
        return self.found


def test_a_fresh_store_asks_ctia_once_whether_the_instance_exported_before(settings):
    s = settings()
    first, reset = context(), context()
    detect_lost_state(FakeClient(False), s, first)  # type: ignore[arg-type]
    client = FakeClient(True)
    detect_lost_state(client, s, reset)  # type: ignore[arg-type]
    assert first.store.get(RECOVER_KEY) is False and reset.store.get(RECOVER_KEY) is True
    assert client.asked == ["exportkit-instance-" + owner_key(s, EAST).rsplit("-", 1)[1]]
    remember_owner(s, reset)
    detect_lost_state(client, s, reset)  # type: ignore[arg-type]
    assert len(client.asked) == 1  # decided once; not asked again


def test_when_ctia_cannot_answer_the_question_stays_open_for_the_next_run(settings):
    from exportkit.errors import TransientError

    class Down:
        def has_external_id(self, entity: str, xid: str) -> bool:
            raise TransientError("CTIA HTTP 503 after 5 tries")

    ctx = context()
    assert detect_lost_state(Down(), settings(), ctx) is None  # type: ignore[arg-type]
    assert RECOVER_KEY not in ctx.store and OWNERS_KEY not in ctx.store
