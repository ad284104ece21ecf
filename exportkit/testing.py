"""A test kit for sink authors: record factory, recording sink, harness and contract tests.

Quick start: put this in your plugin's ``tests/test_contract.py`` and run
pytest. Every test of :class:`SinkContract` then runs against your sink::

    from exportkit.testing import SinkContract
    from exportkit_mysink import exportkit_sink_types

    class TestMySinkContract(SinkContract):
        # Overrides for make_indicator() that make the sink reject a record,
        # or None when the sink accepts everything (the test then says so).
        rejects_record = {"type": "cve", "type_name": "CVE", "value": "CVE-2024-0001"}
        # A settings table with mistakes, and how many problems it holds.
        bad_settings = {"url": 5, "timeout": -1}
        bad_settings_problems = 2

        def sink_setup(self, tmp_path):
            # The same tmp_path must give the same target (a file, an emulator).
            sink_type = exportkit_sink_types()[0]
            return sink_type, {"url": f"file://{tmp_path}/out"}

        def read_back(self, harness):
            # Source ids of the records live in the target, one entry per stored
            # item; return None if the target cannot be read back.
            return [...]

The other pieces work on their own, in any test:

* :func:`make_indicator` / :func:`make_indicators` build valid records;
  override any field (``make_indicator(status="Expired")``).
* :class:`SinkHarness` drives one sink object outside the engine: it builds
  the :class:`~exportkit.context.SinkContext`, calls the hooks through a plugin
  manager (so hook signatures are checked as in a run), checks the outcomes and
  applies them to in-memory holdings as the engine would::

      harness = SinkHarness.from_type(sink_type, {"format": "jsonl", "path": "out.jsonl"})
      with harness.session():            # open, then close(error) however the block ends
          outcomes = harness.write(make_indicators(3))
      assert [o.status for o in outcomes] == ["accepted"] * 3
      assert harness.held("1").content_hash == make_indicators(3)[0].content_hash

* :class:`RecordingSink` is a sink that records every call and can be told to
  reject, defer or skip ids, or to raise on its Nth call; use it to test
  engines, filters and wrappers. :func:`recording_sink_type` wraps it in a
  :class:`~exportkit.context.SinkType` with real settings.

Nothing here imports pytest at import time; it is imported where a test needs it.
"""

from __future__ import annotations

import json
import logging
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable, Iterator, Mapping, Sequence

import attrs

from exportkit.context import Holding, RunInfo, SinkContext, SinkType
from exportkit.errors import ConfigError, SinkError
from exportkit.hookspecs import hookimpl
from exportkit.plugins import build_instance_manager, sink_caller
from exportkit.records import Indicator, canonical_type
from exportkit.results import CONFIRMED, BatchResult, Outcome, Withdrawal
from exportkit.settings import parse_settings, setting

__all__ = [
    "FIXED_TIME",
    "make_indicator",
    "make_indicators",
    "Call",
    "RecordingSink",
    "RecordingSettings",
    "recording_sink_type",
    "MemoryStore",
    "MemoryHoldings",
    "SinkHarness",
    "SinkContract",
]

#: the ``updated_at`` of :func:`make_indicator` records (and the harness's default run time)
FIXED_TIME = datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone.utc)

_DEFAULTS: dict[str, Any] = {
    "source": "ThreatQ",
    "source_id": "1",
    "value": "203.0.113.1",
    "type_name": "IP Address",
    "status": "Active",
    "score": 7.5,
    "tlp": "amber",
    "tags": ("test",),
    "sources": ("Test Feed",),
    "description": "",
    "created_at": FIXED_TIME - timedelta(days=1),
    "updated_at": FIXED_TIME,
    "link": None,
}


# --- Records ----------------------------------------------------------------------


def make_indicator(**overrides: Any) -> Indicator:
    """A valid record: an Active IP address, score 7.5, TLP amber, updated at :data:`FIXED_TIME`.

    Any field can be overridden. When ``type_name`` is given without ``type``,
    the canonical type follows it (``make_indicator(type_name="FQDN", value="a.example")``).
    ``link`` defaults to a ThreatQ-style link for the source id.
    """
    fields = dict(_DEFAULTS)
    fields.update(overrides)
    if "type" not in overrides:
        fields["type"] = canonical_type(str(fields["type_name"]))
    if "link" not in overrides:
        fields["link"] = f"https://tq.example.com/indicators/{fields['source_id']}/details"
    return Indicator.create(**fields)


def make_indicators(n: int, *, start: int = 1, **overrides: Any) -> list[Indicator]:
    """``n`` records with unique ids (``start``, ``start+1``, ...) and unique IP values.

    Record ``i`` is updated ``i`` seconds after :data:`FIXED_TIME`, so the list is
    in source order. An override that is callable is called with the record's
    id number, for per-record values: ``make_indicators(3, value=lambda i: f"h{i}.example")``.
    """
    out = []
    for i in range(start, start + n):
        fields: dict[str, Any] = {
            "source_id": str(i),
            "value": f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}",
            "updated_at": FIXED_TIME + timedelta(seconds=i),
        }
        for key, value in overrides.items():
            fields[key] = value(i) if callable(value) else value
        out.append(make_indicator(**fields))
    return out


# --- A sink that records its calls --------------------------------------------------


@attrs.frozen
class Call:
    """One hook call a :class:`RecordingSink` received.

    :param hook: ``open``, ``write``, ``withdraw``, ``close`` or ``check``.
    :param ids: source ids of the records or withdrawals (empty for open/close/check).
    :param error: the ``error`` argument of ``close``.
    :param dry_run: the context's dry-run flag.
    """

    hook: str
    ids: tuple[str, ...] = ()
    error: BaseException | None = None
    dry_run: bool = False


class RecordingSink:
    """A sink that records every hook call and answers as it is told.

    :param reject: ids to reject (reason ``"rejected by test"``).
    :param defer: ids to defer.
    :param skip: ids to skip.
    :param raise_on: raise on this call (1-based) of the hooks in ``raise_in``.
    :param raise_in: which hooks count for ``raise_on`` (default write and withdraw).
    :param exception: what to raise (default a :class:`~exportkit.errors.SinkError`).

    The id sets are ordinary attributes, so a test can change them between calls.
    Accepted writes are kept in :attr:`live` (source id -> record), accepted
    withdrawals remove them, so :attr:`live` is what the "target" holds.
    """

    def __init__(
        self,
        *,
        reject: Iterable[str] = (),
        defer: Iterable[str] = (),
        skip: Iterable[str] = (),
        raise_on: int | None = None,
        raise_in: Iterable[str] = ("write", "withdraw"),
        exception: BaseException | None = None,
    ) -> None:
        self.reject = set(reject)
        self.defer = set(defer)
        self.skip = set(skip)
        self.raise_on = raise_on
        self.raise_in = set(raise_in)
        self.exception = exception
        self.calls: list[Call] = []
        self.live: dict[str, Indicator] = {}
        self._counted = 0

    # convenience views
    def hooks(self) -> list[str]:
        """The hook names called so far, in order (``["open", "write", "close"]``)."""
        return [c.hook for c in self.calls]

    def written_ids(self) -> list[str]:
        """Every id handed to ``write``, in order, repeats included."""
        return [i for c in self.calls if c.hook == "write" for i in c.ids]

    def _record(self, call: Call) -> None:
        self.calls.append(call)
        if call.hook in self.raise_in:
            self._counted += 1
            if self.raise_on is not None and self._counted == self.raise_on:
                raise self.exception if self.exception is not None else SinkError(f"injected failure on {call.hook} call {self._counted}", sink="recording")

    def _answer(self, items: Sequence[Any]) -> BatchResult:
        result = BatchResult()
        for item in items:
            sid = item.source_id
            if sid in self.reject:
                result.reject(sid, "rejected by test")
            elif sid in self.defer:
                result.defer(sid, "deferred by test")
            elif sid in self.skip:
                result.skip(sid, "skipped by test")
            else:
                result.accept(sid, remote={"id": f"remote-{sid}"})
        return result

    @hookimpl
    def exportkit_open(self, context: SinkContext) -> None:
        self._record(Call("open", dry_run=context.dry_run))

    @hookimpl
    def exportkit_check(self, context: SinkContext) -> list[str]:
        self._record(Call("check", dry_run=context.dry_run))
        return ["recording sink: nothing to check"]

    @hookimpl
    def exportkit_write(self, records: Sequence[Indicator], context: SinkContext) -> BatchResult:
        self._record(Call("write", tuple(r.source_id for r in records), dry_run=context.dry_run))
        result = self._answer(records)
        if not context.dry_run:
            for record in records:
                outcome = result.get(record.source_id)
                if outcome is not None and outcome.status == "accepted":
                    self.live[record.source_id] = record
        return result

    @hookimpl
    def exportkit_withdraw(self, withdrawals: Sequence[Withdrawal], context: SinkContext) -> BatchResult:
        self._record(Call("withdraw", tuple(w.source_id for w in withdrawals), dry_run=context.dry_run))
        result = self._answer(withdrawals)
        if not context.dry_run:
            for w in withdrawals:
                outcome = result.get(w.source_id)
                if outcome is not None and outcome.status == "accepted":
                    self.live.pop(w.source_id, None)
        return result

    @hookimpl
    def exportkit_close(self, context: SinkContext, error: BaseException | None) -> None:
        self._record(Call("close", error=error, dry_run=context.dry_run))


@attrs.frozen
class RecordingSettings:
    """Settings of :func:`recording_sink_type` sinks (the ``[sinks.NAME]`` table)."""

    reject: list[str] = setting([], help="Source ids to reject.")
    defer: list[str] = setting([], help="Source ids to defer.")
    skip: list[str] = setting([], help="Source ids to skip.")
    raise_on: int | None = setting(None, help="Raise a SinkError on this write/withdraw call (1-based).", minimum=1)


class _RecordingFactory:
    """``factory(settings) -> RecordingSink`` that keeps every sink it made in :attr:`instances`."""

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs
        self.instances: list[RecordingSink] = []

    def __call__(self, settings: RecordingSettings) -> RecordingSink:
        kwargs = dict(self.kwargs)
        kwargs.setdefault("reject", settings.reject)
        kwargs.setdefault("defer", settings.defer)
        kwargs.setdefault("skip", settings.skip)
        kwargs.setdefault("raise_on", settings.raise_on)
        sink = RecordingSink(**kwargs)
        self.instances.append(sink)
        return sink

    @property
    def last(self) -> RecordingSink:
        """The sink made most recently."""
        return self.instances[-1]


def recording_sink_type(name: str = "recording", **kwargs: Any) -> SinkType:
    """A :class:`SinkType` that builds :class:`RecordingSink` objects.

    Keyword arguments go to every :class:`RecordingSink` (they win over the
    settings). ``sink_type.factory.instances`` lists the sinks it made and
    ``sink_type.factory.last`` is the newest.
    """
    return SinkType(name, RecordingSettings, _RecordingFactory(**kwargs), "Records every call (for tests).")


# --- In-memory state ---------------------------------------------------------------


class MemoryStore:
    """A :class:`~exportkit.context.KeyValueStore` in memory.

    Values go through JSON as in the real store, so a value that would not
    survive the state database fails here too.
    """

    def __init__(self, initial: Mapping[str, Any] | None = None) -> None:
        self.data: dict[str, str] = {}
        for key, value in (initial or {}).items():
            self.set(key, value)

    def get(self, key: str, default: Any = None) -> Any:
        return json.loads(self.data[key]) if key in self.data else default

    def set(self, key: str, value: Any) -> None:
        self.data[key] = json.dumps(value)

    def delete(self, key: str) -> None:
        self.data.pop(key, None)


class MemoryHoldings:
    """A :class:`~exportkit.context.HoldingsView` in memory, with the writes the engine makes."""

    def __init__(self) -> None:
        self.data: dict[str, Holding] = {}

    def get(self, source_id: str) -> Holding | None:
        return self.data.get(source_id)

    def get_many(self, source_ids: Iterable[str]) -> dict[str, Holding]:
        return {sid: self.data[sid] for sid in source_ids if sid in self.data}

    def put(self, source_id: str, content_hash: str, remote: Mapping[str, Any] | None) -> None:
        # The real state stores remote as JSON: fail here for what would fail there.
        remote = json.loads(json.dumps(remote)) if remote is not None else None
        self.data[source_id] = Holding(content_hash, remote)

    def drop(self, source_id: str) -> None:
        self.data.pop(source_id, None)


# --- The harness -------------------------------------------------------------------


class SinkHarness:
    """Drive one sink object through its hooks, outside the engine.

    :param sink: the sink object (``@hookimpl`` methods).
    :param name: the configured sink name.
    :param settings: the parsed settings put in the context.
    :param dry_run: the run's dry-run flag.
    :param proxies: ``requests``-style proxies for the context.
    :param now: the run's start time (default :data:`FIXED_TIME`).
    :param instance: the instance name.
    :param mode: the run mode.

    Unlike the engine, the harness lets the sink's exceptions through, so a
    test can assert on them. Like the engine it never sends an empty batch,
    and it applies outcomes to :attr:`holdings`: an accepted write stores
    ``(content_hash, remote)``, an accepted withdrawal drops the holding, a
    rejected record goes to :attr:`dead_letters` (a dry run changes neither).
    It also checks what the engine relies on: exactly one outcome per item,
    no unknown ids, a reason for every status but accepted, JSON ``remote``.
    """

    def __init__(
        self,
        sink: object,
        *,
        name: str = "sink",
        settings: Any = None,
        dry_run: bool = False,
        proxies: Mapping[str, str] | None = None,
        now: datetime | None = None,
        instance: str = "test",
        mode: str = "incremental",
        store: MemoryStore | None = None,
        holdings: MemoryHoldings | None = None,
    ) -> None:
        self.sink = sink
        self.name = name
        self.settings = settings
        self.store = store if store is not None else MemoryStore()
        self.holdings = holdings if holdings is not None else MemoryHoldings()
        self.dead_letters: dict[str, str] = {}
        #: every (hook, outcome) pair returned so far
        self.outcomes: list[tuple[str, Outcome]] = []
        #: the error passed to the last close, and whether close was called
        self.closed = False
        self.close_error: BaseException | None = None
        logger = logging.LoggerAdapter(logging.getLogger(f"exportkit.testing.{name}"), {"instance": instance, "sink": name})
        self.run = RunInfo(
            instance=instance,
            run_id="test-run",
            mode=mode,
            dry_run=dry_run,
            sinks=(name,),
            started=now or FIXED_TIME,
            logger=logger,
        )
        self.context = SinkContext(
            run=self.run, sink=name, settings=settings, store=self.store, holdings=self.holdings, logger=logger, proxies=proxies
        )
        self.pm = build_instance_manager({name: sink})

    # --- construction from a sink type ---------------------------------------------

    @staticmethod
    def parse(sink_type: SinkType, raw: Mapping[str, Any], *, name: str | None = None, environ: Mapping[str, str] | None = None) -> Any:
        """Parse a raw ``[sinks.NAME]`` table with the sink's settings class.

        :raises ConfigError: with every problem found, as ``exportkit check`` reports them.
        """
        section = f"sinks.{name or sink_type.name}"
        settings, problems = parse_settings(sink_type.settings_class, raw, file="<test>", section=section, environ=environ)
        if problems:
            raise ConfigError(f"[{section}] is not valid", problems)
        return settings

    @classmethod
    def from_type(
        cls, sink_type: SinkType, raw: Mapping[str, Any], *, name: str | None = None, environ: Mapping[str, str] | None = None, **kwargs: Any
    ) -> SinkHarness:
        """Parse ``raw`` settings, build the sink with the type's factory, and wrap it.

        :raises ConfigError: the settings are not valid (every problem listed).
        """
        name = name or sink_type.name
        settings = cls.parse(sink_type, raw, name=name, environ=environ)
        return cls(sink_type.factory(settings), name=name, settings=settings, **kwargs)

    # --- hooks --------------------------------------------------------------------------

    def _hook(self, hook: str) -> Any:
        return sink_caller(self.pm, hook, self.name)

    @property
    def dry_run(self) -> bool:
        return self.run.dry_run

    def open(self) -> None:
        """Call ``exportkit_open``."""
        self._hook("exportkit_open")(context=self.context)

    def check(self) -> list[str]:
        """Call ``exportkit_check``; the lines of every implementation, joined."""
        lines: list[str] = []
        for result in self._hook("exportkit_check")(context=self.context):
            lines += list(result or ())
        return lines

    def write(self, records: Sequence[Indicator]) -> list[Outcome]:
        """Call ``exportkit_write`` with one batch; one outcome per record, in order."""
        outcomes = self._call("exportkit_write", list(records), records=list(records))
        for record, outcome in zip(records, outcomes):
            if self.dry_run:
                continue
            if outcome.status == "accepted":
                self.holdings.put(record.source_id, record.content_hash, outcome.remote)
                self.dead_letters.pop(record.source_id, None)
            elif outcome.status == "rejected":
                self.dead_letters[record.source_id] = outcome.reason or ""
        return outcomes

    def withdraw(self, withdrawals: Sequence[Withdrawal | Indicator | str]) -> list[Outcome]:
        """Call ``exportkit_withdraw``; a record becomes an ``expired`` withdrawal, an id a ``removed`` one."""
        items = [_withdrawal(w) for w in withdrawals]
        outcomes = self._call("exportkit_withdraw", items, withdrawals=items)
        for item, outcome in zip(items, outcomes):
            if self.dry_run:
                continue
            if outcome.status == "accepted":
                self.holdings.drop(item.source_id)
            elif outcome.status == "rejected":
                self.dead_letters[item.source_id] = f"withdraw: {outcome.reason}"
        return outcomes

    def close(self, error: BaseException | None = None) -> None:
        """Call ``exportkit_close`` with ``error``."""
        self.closed = True
        self.close_error = error
        self._hook("exportkit_close")(context=self.context, error=error)

    @contextmanager
    def session(self) -> Iterator[SinkHarness]:
        """Open the sink, then close it however the block ends (with the error, if any), as the engine does."""
        self.open()
        try:
            yield self
        except BaseException as exc:
            self.close(exc)
            raise
        self.close(None)

    def send(self, records: Sequence[Indicator]) -> list[Outcome]:
        """Open, write one batch, close: the shortest complete run."""
        with self.session():
            return self.write(records)

    # --- what the engine would do ---------------------------------------------------

    def pending(self, records: Iterable[Indicator]) -> list[Indicator]:
        """The records the engine would write: those not held with the same content."""
        return [r for r in records if (h := self.holdings.get(r.source_id)) is None or h.content_hash != r.content_hash]

    def held(self, record: Indicator | str) -> Holding | None:
        """The holding for a record or id, or ``None``."""
        return self.context.held(record)

    def _call(self, hook: str, items: list[Any], **kwargs: Any) -> list[Outcome]:
        if not items:
            return []  # the engine never sends an empty batch
        merged = BatchResult()
        for result in self._hook(hook)(context=self.context, **kwargs):
            if result is not None and not isinstance(result, BatchResult):
                raise AssertionError(f"{hook} returned {type(result).__name__}, expected a BatchResult or None")
            for outcome in result or ():
                merged.add(outcome)
        ids = {item.source_id for item in items}
        unknown = sorted(o.source_id for o in merged if o.source_id not in ids)
        if unknown:
            raise AssertionError(f"{hook} reported outcomes for ids not in the batch: {unknown}")
        outcomes = []
        for item in items:
            outcome = merged.get(item.source_id) or Outcome(item.source_id, "accepted")
            if outcome.status != "accepted" and not outcome.reason:
                raise AssertionError(f"{hook}: {outcome.status} outcome for {item.source_id} has no reason")
            if outcome.remote is not None:
                try:
                    json.dumps(outcome.remote)
                except (TypeError, ValueError) as exc:
                    raise AssertionError(f"{hook}: remote of {item.source_id} is not JSON-serialisable: {exc}") from None
            outcomes.append(outcome)
            self.outcomes.append((hook, outcome))
        return outcomes


def _withdrawal(item: Withdrawal | Indicator | str) -> Withdrawal:
    if isinstance(item, Withdrawal):
        return item
    if isinstance(item, Indicator):
        return Withdrawal(item.source_id, "expired", item)
    return Withdrawal(str(item), "removed", None)


# --- The contract suite --------------------------------------------------------------

_UNDECLARED: Any = object()


class SinkContract:
    """Standard tests every sink should pass; inherit in a ``Test...`` class.

    The subclass must provide:

    * :meth:`sink_setup` ``(tmp_path) -> (sink_type, raw_settings)``; the same
      ``tmp_path`` must give the same target, because some tests build a
      second sink object to look at what the first one left behind;
    * :meth:`read_back` ``(harness) -> list of source ids`` live in the target
      (one entry per stored item), or ``None`` when it cannot be read back (the
      read-back checks are then left out, the outcome checks stay);
    * :attr:`rejects_record`: ``make_indicator`` overrides for a record the
      sink rejects, or ``None`` to declare that it rejects nothing (that test
      is then skipped, saying so);
    * :attr:`bad_settings` and :attr:`bad_settings_problems`: a settings table
      with mistakes and how many problems it holds (count required keys it
      leaves out too), or ``None`` for a sink without settings. The test adds
      one misspelt key of its own and expects exactly one more problem.

    Nothing is skipped silently: leaving one of the attributes undeclared fails
    the tests that need it.
    """

    rejects_record: Mapping[str, Any] | None = _UNDECLARED
    bad_settings: Mapping[str, Any] | None = _UNDECLARED
    bad_settings_problems: int = 0

    # --- what the subclass provides -------------------------------------------------

    def sink_setup(self, tmp_path: Any) -> tuple[SinkType, Mapping[str, Any]]:
        raise NotImplementedError(f"{type(self).__name__} must define sink_setup(tmp_path) -> (sink_type, raw settings)")

    def read_back(self, harness: SinkHarness) -> Sequence[str] | None:
        raise NotImplementedError(
            f"{type(self).__name__} must define read_back(harness) -> list of source ids live in the target, or None"
        )

    # --- helpers ----------------------------------------------------------------------

    def harness(self, tmp_path: Any, **kwargs: Any) -> SinkHarness:
        """A new harness for the subclass's sink (each call builds a new sink object)."""
        sink_type, raw = self.sink_setup(tmp_path)
        return SinkHarness.from_type(sink_type, raw, **kwargs)

    def _held_in_target(self, harness: SinkHarness) -> list[str] | None:
        found = self.read_back(harness)
        return None if found is None else list(found)

    @staticmethod
    def _declared(cls: type, attribute: str) -> Any:
        value = getattr(cls, attribute)
        if value is _UNDECLARED:
            raise AssertionError(f"{cls.__name__} must declare {attribute} (None means: not applicable to this sink)")
        return value

    @staticmethod
    def _assert_confirmed(outcomes: Sequence[Outcome], expected_ids: Sequence[str]) -> None:
        assert [o.source_id for o in outcomes] == list(expected_ids)
        bad = [(o.source_id, o.status, o.reason) for o in outcomes if o.status not in CONFIRMED or o.status == "rejected"]
        assert not bad, f"records not delivered: {bad}"

    # --- the tests ----------------------------------------------------------------------

    def test_open_and_close_without_records(self, tmp_path: Any) -> None:
        harness = self.harness(tmp_path)
        with harness.session():
            assert harness.write([]) == []  # an empty batch is never handed to the sink
            assert harness.withdraw([]) == []
        assert harness.closed and harness.close_error is None
        held = self._held_in_target(harness)
        if held is not None:
            assert held == []

    def test_write_delivers_every_record(self, tmp_path: Any) -> None:
        records = make_indicators(5)
        harness = self.harness(tmp_path)
        with harness.session():
            outcomes = harness.write(records)
        self._assert_confirmed(outcomes, [r.source_id for r in records])
        for record, outcome in zip(records, outcomes):
            if outcome.status == "accepted":
                assert harness.held(record).content_hash == record.content_hash
        held = self._held_in_target(harness)
        if held is not None:
            accepted = {o.source_id for o in outcomes if o.status == "accepted"}
            assert sorted(set(held)) == sorted(accepted)

    def test_unicode_and_very_long_values(self, tmp_path: Any) -> None:
        records = [
            make_indicator(source_id="1", type_name="FQDN", value="пример.испытание", description="Ünïcödé — 日本語 — עברית — 🛰️"),
            make_indicator(source_id="2", type_name="URL", value="https://example.com/" + "ä" * 5000, tags=("tag-" + "x" * 2000, "ключ")),
            make_indicator(source_id="3", type_name="String", value="line one\nline two\t\"quoted\" \\ back", description="x" * 100_000),
        ]
        harness = self.harness(tmp_path)
        with harness.session():
            outcomes = harness.write(records)
        assert [o.source_id for o in outcomes] == ["1", "2", "3"]
        assert all(o.status != "deferred" for o in outcomes), outcomes
        held = self._held_in_target(harness)
        if held is not None:
            assert sorted(set(held)) == sorted(o.source_id for o in outcomes if o.status == "accepted")

    def test_duplicate_values_within_a_batch(self, tmp_path: Any) -> None:
        # Two source records with one value (ThreatQ keeps one per type, sources differ);
        # each needs its own outcome and its own holding.
        records = [
            make_indicator(source_id="1", value="198.51.100.7"),
            make_indicator(source_id="2", value="198.51.100.7", score=2),
            make_indicator(source_id="3", value="198.51.100.8"),
        ]
        harness = self.harness(tmp_path)
        with harness.session():
            outcomes = harness.write(records)
        self._assert_confirmed(outcomes, ["1", "2", "3"])
        accepted = {o.source_id for o in outcomes if o.status == "accepted"}
        assert {sid for sid in ("1", "2", "3") if harness.held(sid)} == accepted

    def test_partial_rejection_is_reported_per_record(self, tmp_path: Any) -> None:
        overrides = self._declared(type(self), "rejects_record")
        if overrides is None:
            import pytest

            pytest.skip(f"{type(self).__name__}.rejects_record = None: this sink declares it rejects no record")
        good = make_indicators(2)
        bad = make_indicator(**{"source_id": "999", **dict(overrides)})
        harness = self.harness(tmp_path)
        with harness.session():
            outcomes = harness.write([good[0], bad, good[1]])
        by_id = {o.source_id: o for o in outcomes}
        assert by_id["999"].status == "rejected" and by_id["999"].reason
        assert by_id["1"].status in ("accepted", "skipped") and by_id["2"].status in ("accepted", "skipped")
        assert "999" in harness.dead_letters and harness.held("999") is None
        held = self._held_in_target(harness)
        if held is not None:
            assert "999" not in held

    def test_resending_a_batch_creates_nothing_new(self, tmp_path: Any) -> None:
        records = make_indicators(4)
        first = self.harness(tmp_path)
        with first.session():
            first.write(records)
        held_before = self._held_in_target(first)
        hashes = {sid: h.content_hash for sid, h in first.holdings.data.items()}
        # A new sink object (the next run) gets the same batch again, with the holdings of the first.
        second = self.harness(tmp_path, store=first.store, holdings=first.holdings)
        with second.session():
            outcomes = second.write(records)
        self._assert_confirmed(outcomes, [r.source_id for r in records])
        assert {sid: h.content_hash for sid, h in second.holdings.data.items()} == hashes
        held_after = self._held_in_target(second)
        if held_before is not None:
            assert sorted(held_after or []) == sorted(held_before)

    def test_withdraw_held_records(self, tmp_path: Any) -> None:
        records = make_indicators(3)
        harness = self.harness(tmp_path)
        with harness.session():
            written = harness.write(records)
            withdrawals = [
                Withdrawal("1", "expired", attrs.evolve(records[0], status="Expired")),
                Withdrawal("2", "removed", None),
            ]
            outcomes = harness.withdraw(withdrawals)
        assert all(o.status == "accepted" for o in written if o.source_id in ("1", "2")), written
        self._assert_confirmed(outcomes, ["1", "2"])
        assert harness.held("1") is None and harness.held("2") is None
        assert harness.held("3") is not None
        held = self._held_in_target(harness)
        if held is not None:
            assert sorted(set(held)) == ["3"]

    def test_close_is_called_after_an_error(self, tmp_path: Any) -> None:
        class Interrupted(Exception):
            pass

        records = make_indicators(2)
        harness = self.harness(tmp_path)
        try:
            with harness.session():
                harness.write(records)
                raise Interrupted("the run stopped (simulated)")
        except Interrupted:
            pass
        else:  # pragma: no cover - the block always raises
            raise AssertionError("unreachable")
        # close received the error and did not raise (a raising close would replace Interrupted).
        assert harness.closed and isinstance(harness.close_error, Interrupted)
        # The sink let go of its resources: a new sink object on the same target works.
        again = self.harness(tmp_path)
        with again.session():
            outcomes = again.write(make_indicators(1, start=10))
        self._assert_confirmed(outcomes, ["10"])

    def test_settings_problems_are_listed_at_once(self, tmp_path: Any) -> None:
        bad = self._declared(type(self), "bad_settings")
        sink_type, good = self.sink_setup(tmp_path)
        # The good settings parse; a misspelt extra key is always one more problem.
        SinkHarness.parse(sink_type, good)
        expected = (self.bad_settings_problems if bad is not None else 0) + 1
        raw = {**dict(bad or {}), "no_such_setting_xyz": True}
        _, problems = parse_settings(sink_type.settings_class, raw, file="<test>", section=f"sinks.{sink_type.name}")
        assert len(problems) == expected, "\n".join(map(str, problems))
        assert all(p.key.startswith(f"sinks.{sink_type.name}.") for p in problems)
        assert any(p.key.endswith("no_such_setting_xyz") for p in problems)
        try:
            SinkHarness.parse(sink_type, raw)
        except ConfigError as exc:
            assert len(exc.problems) == expected
        else:
            raise AssertionError("bad settings were accepted")

    def test_dry_run_sends_nothing(self, tmp_path: Any) -> None:
        records = make_indicators(3)
        harness = self.harness(tmp_path, dry_run=True)
        with harness.session():
            outcomes = harness.write(records)
            withdrawn = harness.withdraw(["1"])
        assert [o.source_id for o in outcomes] == ["1", "2", "3"]
        assert all(o.status != "deferred" for o in outcomes + withdrawn)
        assert harness.holdings.data == {} and harness.dead_letters == {}
        held = self._held_in_target(harness)
        if held is not None:
            assert held == []
