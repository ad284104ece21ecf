"""Drive one sink object outside the engine, with in-memory state that behaves like the engine's.

The harness calls hooks exactly as a run does: through a plugin manager, on
one dedicated thread for the sink's whole session
(:class:`exportkit.sinkrun.SinkThread`), and turns results into outcomes with
the engine's own rule (:func:`exportkit.outcomes.resolve_outcomes`). A sink
holding a thread-bound resource (a ``sqlite3`` connection opened in
``exportkit_open``) therefore works in the kit exactly when it works in a run.
"""

from __future__ import annotations

import json
import logging
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence


from exportkit.context import Holding, RunInfo, SinkContext, SinkType
from exportkit.errors import ConfigError
from exportkit.outcomes import resolve_outcomes
from exportkit.plugins import build_instance_manager
from exportkit.records import Indicator
from exportkit.results import Outcome, Withdrawal
from exportkit.settings import parse_settings
from exportkit.sinkrun import SinkHooks
from exportkit.testing.factories import FIXED_TIME

__all__ = ['MemoryStore', 'MemoryHoldings', 'SinkHarness']

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

    def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        return {key: json.loads(self.data[key]) for key in keys if key in self.data}

    def set(self, key: str, value: Any) -> None:
        self.data[key] = json.dumps(value)

    def delete(self, key: str) -> None:
        self.data.pop(key, None)

    def set_durable(self, key: str, value: Any) -> None:
        self.set(key, value)


class MemoryHoldings:
    """A :class:`~exportkit.context.HoldingsView` in memory, with the writes the engine makes."""

    def __init__(self) -> None:
        self.data: dict[str, Holding] = {}

    def get(self, source_id: str) -> Holding | None:
        return self.data.get(source_id)

    def get_many(self, source_ids: Iterable[str]) -> dict[str, Holding]:
        return {sid: self.data[sid] for sid in source_ids if sid in self.data}

    def count(self) -> int:
        return len(self.data)

    def put(self, source_id: str, content_hash: str, remote: Mapping[str, Any] | None) -> None:
        # The real state stores remote as JSON: fail here for what would fail there.
        remote = json.loads(json.dumps(remote)) if remote is not None else None
        self.data[source_id] = Holding(content_hash, remote)

    def drop(self, source_id: str) -> None:
        self.data.pop(source_id, None)

    def items(self) -> Iterator[tuple[str, Holding]]:
        return iter(list(self.data.items()))

    def put_durable(self, source_id: str, content_hash: str, remote: Mapping[str, Any] | None) -> None:
        self.put(source_id, content_hash, remote)

    def drop_durable(self, source_id: str) -> None:
        self.drop(source_id)


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

    Every hook runs on the sink's own thread, the same one from ``open`` to
    ``close`` (a new one after ``close``), as in a run. Unlike the engine, the
    harness lets the sink's exceptions through, so a test can assert on them.
    Like the engine it never sends an empty batch,
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
        self.hooks = SinkHooks(name, self.pm)

    # --- construction from a sink type ---------------------------------------------

    @staticmethod
    def parse(
        sink_type: SinkType,
        raw: Mapping[str, Any],
        *,
        name: str | None = None,
        environ: Mapping[str, str] | None = None,
        config_dir: str | Path | None = None,
    ) -> Any:
        """Parse a raw ``[sinks.NAME]`` table with the sink's settings class.

        :param config_dir: the folder the config file would be in: relative
            ``ConfigPath`` settings and ``file:`` secrets start there, as in a run
            (``None``: they stay relative, to the current directory).
        :raises ConfigError: with every problem found, as ``exportkit check`` reports them.
        """
        section = f"sinks.{name or sink_type.name}"
        base_dir = Path(config_dir) if config_dir is not None else None
        settings, problems = parse_settings(sink_type.settings_class, raw, file="<test>", section=section, environ=environ, base_dir=base_dir)
        if problems:
            raise ConfigError(f"[{section}] is not valid", problems)
        return settings

    @classmethod
    def from_type(
        cls,
        sink_type: SinkType,
        raw: Mapping[str, Any],
        *,
        name: str | None = None,
        environ: Mapping[str, str] | None = None,
        config_dir: str | Path | None = None,
        **kwargs: Any,
    ) -> SinkHarness:
        """Parse ``raw`` settings, build the sink with the type's factory, and wrap it.

        :param config_dir: where relative paths in the settings start (see :meth:`parse`).
        :raises ConfigError: the settings are not valid (every problem listed).
        """
        name = name or sink_type.name
        settings = cls.parse(sink_type, raw, name=name, environ=environ, config_dir=config_dir)
        return cls(sink_type.factory(settings), name=name, settings=settings, **kwargs)

    # --- hooks --------------------------------------------------------------------------

    @property
    def dry_run(self) -> bool:
        return self.run.dry_run

    def open(self) -> None:
        """Call ``exportkit_open``."""
        self.hooks("exportkit_open", context=self.context)

    def check(self) -> list[str]:
        """Call ``exportkit_check``; the lines of every implementation, joined."""
        lines: list[str] = []
        for result in self.hooks("exportkit_check", context=self.context):
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
        """Call ``exportkit_close`` with ``error``, then end the sink's thread (its exception is raised here)."""
        self.closed = True
        self.close_error = error
        try:
            self.hooks("exportkit_close", context=self.context, error=error)
        finally:
            self.hooks.thread.stop()

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
        resolved = resolve_outcomes(hook, items, self.hooks(hook, context=self.context, **kwargs))
        if resolved.problems:  # the engine would log these and go on; a test must see them
            raise AssertionError("; ".join(resolved.problems))
        self.outcomes += [(hook, outcome) for outcome in resolved.outcomes]
        return resolved.outcomes


def _withdrawal(item: Withdrawal | Indicator | str) -> Withdrawal:
    if isinstance(item, Withdrawal):
        return item
    if isinstance(item, Indicator):
        return Withdrawal(item.source_id, "expired", item)
    return Withdrawal(str(item), "removed", None)
