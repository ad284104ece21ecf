"""Test helpers: records, settings, a CTIA emulator, and a tiny stand-in for the engine.

:class:`Harness` drives a sink the way the engine does, with in-memory state:
it sends only records that are live and changed since the sink accepted them,
routes held records that expired to the withdraw hook, and applies outcomes
(accepted -> holding stored; accepted withdrawal -> holding dropped).
"""

from __future__ import annotations

import itertools
import logging
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterable, Sequence

import pytest

from exportkit.context import Holding, RunInfo, SinkContext
from exportkit.http import RetryPolicy
from exportkit.outcomes import resolve_outcomes
from exportkit.records import Indicator
from exportkit.results import BatchResult, Withdrawal
from exportkit.settings import parse_settings
from exportkit_ctia.client import CtiaClient
from exportkit_ctia.emulator import CtiaEmulator
from exportkit_ctia.plugin import CtiaSink
from exportkit_ctia.settings import CtiaSettings

_ids = itertools.count(1000)


class MemoryStore:
    def __init__(self) -> None:
        self.data: dict[str, Any] = {}

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    def set(self, key: str, value: Any) -> None:
        self.data[key] = value

    def delete(self, key: str) -> None:
        self.data.pop(key, None)

    def set_durable(self, key: str, value: Any) -> None:
        self.data[key] = value


class MemoryHoldings(dict):
    def get_many(self, source_ids: Iterable[str]) -> dict[str, Holding]:
        return {i: self[i] for i in source_ids if i in self}

    def put_durable(self, source_id: str, content_hash: str, remote: Any) -> None:
        self[source_id] = Holding(content_hash, remote)

    def drop_durable(self, source_id: str) -> None:
        self.pop(source_id, None)

    def count(self) -> int:
        return len(self)


def make_record(value: str = "192.0.2.1", type: str = "ip", **fields: Any) -> Indicator:
    fields.setdefault("source", "ThreatQ")
    fields.setdefault("source_id", str(next(_ids)))
    fields.setdefault("type_name", type)
    fields.setdefault("status", "Active")
    fields.setdefault("score", 8)
    fields.setdefault("updated_at", "2030-01-01T00:00:00Z")
    return Indicator.create(value=value, type=type, **fields)


def settings_from(raw: dict[str, Any]) -> CtiaSettings:
    settings, problems = parse_settings(CtiaSettings, raw, file="test.toml", section="sinks.ctia")
    assert not problems, problems
    return settings


class Harness:
    """The engine's part, in memory, for one sink."""

    def __init__(self, sink: CtiaSink, *, now: datetime | None = None, proxies: dict[str, str] | None = None,
                 namespace: str = "test\nthreatq tq.example.com CTR Export") -> None:
        self.sink = sink
        self.namespace = namespace
        self.store = MemoryStore()
        self.holdings = MemoryHoldings()
        # The emulator judges liveness by the real clock, so the export time is now.
        self.now = now or datetime.now(timezone.utc)
        self.proxies = proxies
        self.reports: list[dict[str, Any]] = []
        #: runs reconcile (RunInfo.reconcile)
        self.reconcile = False

    def context(self, *, dry_run: bool = False) -> SinkContext:
        logger = logging.LoggerAdapter(logging.getLogger("test.ctia"), {})
        run = RunInfo("test", "run-1", "incremental", dry_run, ("ctia",), self.now, logger, reconcile=self.reconcile)
        return SinkContext(run, "ctia", self.sink.settings, self.store, self.holdings, logger, self.proxies, namespace=self.namespace)

    @staticmethod
    def resolve(hook: str, items: Sequence[Indicator] | Sequence[Withdrawal], result: BatchResult | None) -> BatchResult:
        """One outcome per item by the engine's own rule (unmentioned = accepted); a contract breach fails the test."""
        resolved = resolve_outcomes(hook, items, [result])
        assert not resolved.problems, resolved.problems
        return BatchResult(resolved.outcomes)

    def apply(self, result: BatchResult | None, records: Sequence[Indicator]) -> None:
        by_id = {r.source_id: r for r in records}
        for outcome in result or ():
            if outcome.status == "accepted" and outcome.source_id in by_id:
                self.holdings[outcome.source_id] = Holding(by_id[outcome.source_id].content_hash, outcome.remote)

    def run(self, records: Sequence[Indicator] = (), withdrawals: Sequence[Withdrawal] = (), *, dry_run: bool = False) -> dict[str, BatchResult]:
        """One run: open, write the changed live records, withdraw, close. Returns the results."""
        context = self.context(dry_run=dry_run)
        live = [r for r in records if not r.is_expired(self.now)]
        send = [r for r in live if self.holdings.get(r.source_id) is None or self.holdings[r.source_id].content_hash != r.content_hash]
        expired = [Withdrawal(r.source_id, "expired", r) for r in records if r.is_expired(self.now) and r.source_id in self.holdings]
        gone = list(withdrawals) + expired
        out: dict[str, BatchResult] = {}
        error: BaseException | None = None
        self.sink.exportkit_open(context)
        try:
            if send:
                result = self.resolve("exportkit_write", send, self.sink.exportkit_write(send, context))
                if not dry_run:
                    self.apply(result, send)
                out["write"] = result
            if gone:
                result = self.resolve("exportkit_withdraw", gone, self.sink.exportkit_withdraw(gone, context))
                if not dry_run:
                    for outcome in result:
                        if outcome.status == "accepted":
                            self.holdings.pop(outcome.source_id, None)
                out["withdraw"] = result
        except BaseException as exc:
            error = exc
            raise
        finally:
            self.sink.exportkit_close(context, error)
            self.reports.append(dict(context.notes))
        return out


    def verify(self, source_ids: Sequence[str]) -> BatchResult:
        """A reconcile pass's verification of held records: open, verify, store repairs, close."""
        context = self.context()
        error: BaseException | None = None
        self.sink.exportkit_open(context)
        try:
            result = self.sink.exportkit_verify(list(source_ids), context) or BatchResult()
            for outcome in result:
                if outcome.status == "accepted" and outcome.remote is not None and outcome.source_id in self.holdings:
                    self.holdings[outcome.source_id] = Holding(self.holdings[outcome.source_id].content_hash, outcome.remote)
        except BaseException as exc:
            error = exc
            raise
        finally:
            self.sink.exportkit_close(context, error)
            self.reports.append(dict(context.notes))
        return result


def fast_policy(settings: CtiaSettings, attempts: int = 4) -> RetryPolicy:
    return RetryPolicy(attempts=attempts, base_delay=0.01, max_delay=0.05, max_retry_after=settings.max_retry_after)


@pytest.fixture
def record() -> Callable[..., Indicator]:
    """Factory: ``record(value, type, **fields)`` -> Indicator with a fresh source id."""
    return make_record


@pytest.fixture
def ctia() -> Iterable[CtiaEmulator]:
    with CtiaEmulator() as emulator:
        yield emulator


@pytest.fixture
def harness(ctia: CtiaEmulator) -> Callable[..., Harness]:
    """Factory: ``harness(**settings_overrides)`` -> Harness around a CtiaSink pointed at the emulator."""

    def build(*, attempts: int = 4, now: datetime | None = None, proxies: dict[str, str] | None = None,
              namespace: str = "test\nthreatq tq.example.com CTR Export", **overrides: Any) -> Harness:
        settings = settings_from(ctia.sink_settings(**overrides))
        return Harness(CtiaSink(settings, policy=fast_policy(settings, attempts)), now=now, proxies=proxies, namespace=namespace)

    return build


@pytest.fixture
def settings() -> Callable[..., CtiaSettings]:
    """Factory: ``settings(**raw)`` -> parsed settings (client id and password filled in)."""

    def build(**raw: Any) -> CtiaSettings:
        raw.setdefault("client_id", "client-x")
        raw.setdefault("client_password", "s3cret-password")
        return settings_from(raw)

    return build


__all__ = ["Harness", "make_record", "settings_from", "fast_policy", "timedelta"]


@pytest.fixture
def ctia_client(ctia: CtiaEmulator) -> Callable[..., CtiaClient]:
    """Factory: ``ctia_client(attempts=2, **settings_overrides)`` -> a client of the emulator with fast retries."""

    def build(*, attempts: int = 2, **overrides: Any) -> CtiaClient:
        settings = settings_from(ctia.sink_settings(**overrides))
        return CtiaClient(settings, policy=fast_policy(settings, attempts))

    return build
