"""What the engine hands to plugins: sink types, the run, and each sink's context.

A plugin distribution describes its sinks with :class:`SinkType` (returned
from the ``exportkit_sink_types`` hook). For every sink an instance names, the
engine parses the sink's settings with the declared class, builds one sink
object with the factory, and registers that object in the instance's own
plugin manager. Each data-path hook call then gets that sink's
:class:`SinkContext`.
"""

from __future__ import annotations

import logging
from contextlib import nullcontext
from datetime import datetime
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Callable, ContextManager, Iterator, Protocol

import attrs

if TYPE_CHECKING:
    from exportkit.records import Indicator

__all__ = ["SinkType", "RunInfo", "SinkContext", "Holding", "KeyValueStore", "HoldingsView", "instance_namespace", "preloaded_holdings"]


@attrs.frozen
class SinkType:
    """A kind of sink a plugin provides.

    :param name: the name instances use in ``export.sinks`` and ``[sinks.NAME]``.
    :param settings_class: an attrs class declared with :func:`exportkit.settings.setting`.
    :param factory: ``factory(settings) -> sink``; the sink object implements
        the data-path hooks with ``@hookimpl`` methods. Called once per run.
    :param description: one line for ``exportkit plugins``.
    """

    name: str
    settings_class: type
    factory: Callable[[Any], object]
    description: str = ""


def instance_namespace(instance: str, source_type: str, source_settings: Any) -> str:
    """The :attr:`SinkContext.namespace` of an instance: its name and its source's scope.

    :param source_settings: the parsed ``[source]`` table; its ``scope``
        property (when it has one) says what the source reads. Without it,
        the source type's name stands in.
    """
    scope = getattr(source_settings, "scope", None) or source_type
    return f"{instance}\n{scope}"


@attrs.frozen
class Holding:
    """What the state remembers about one record in one sink.

    :param content_hash: :attr:`~exportkit.records.Indicator.content_hash` of the version the sink accepted.
    :param remote: the ``remote`` mapping the sink returned when it accepted it.
    """

    content_hash: str
    remote: Mapping[str, Any] | None


class KeyValueStore(Protocol):
    """A sink's private store in the instance state (JSON values, kept between runs).

    When writes commit:

    * :meth:`set` and :meth:`delete` are committed with the batch they belong
      to (together with the holdings and the checkpoint of that batch), or at
      the end of the run. A crash before that commit loses them, exactly as
      it loses the batch's holdings, so they always agree with the holdings.
      Never rely on one being on disk before the batch commits.
    * :meth:`set_durable` is committed before it returns, on its own, by
      every backend. Use it for an *intent*: a note that must survive a crash
      that happens after a request went out but before the batch commits
      ("about to supersede judgement X of record R with external id Y").
      The rule: write the intent durably, then send; never the other way
      round. A sink finishes pending intents in ``exportkit_open``.

    Reads see the sink's own writes at once. In a dry run every write is
    kept in memory for that run only. Keep durable and ordinary writes on
    different keys: a pending ordinary write committed with the batch would
    put back an older value.
    """

    def get(self, key: str, default: Any = None) -> Any:
        """Return the stored value or ``default``."""

    def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        """Values of several keys in one read (absent keys are left out); for per-batch look-ups."""

    def set(self, key: str, value: Any) -> None:
        """Store a JSON-serialisable value."""

    def delete(self, key: str) -> None:
        """Forget a key (no error when absent)."""

    def set_durable(self, key: str, value: Any) -> None:
        """Store a JSON-serialisable value and commit it now, before returning (for intents; see above)."""


class HoldingsView(Protocol):
    """Read access to what one sink holds (source id -> :class:`Holding`)."""

    def get(self, source_id: str) -> Holding | None:
        """The holding for one record, or ``None`` when the sink does not hold it."""

    def get_many(self, source_ids: Iterable[str]) -> dict[str, Holding]:
        """Holdings for several records at once (absent ids are left out)."""

    def put_durable(self, source_id: str, content_hash: str, remote: Mapping[str, Any] | None) -> None:
        """Record that the sink holds this version of a record, committed now.

        Only for a sink that *recovers* after a crash (in ``exportkit_open``,
        never in a dry run): it finished work an earlier run started but
        never recorded. In ``exportkit_write``/``exportkit_withdraw`` report
        outcomes instead; the engine records them with the batch.
        """

    def drop_durable(self, source_id: str) -> None:
        """Forget the holding of a record, committed now (recovery only, like :meth:`put_durable`)."""

    def items(self) -> Iterator[tuple[str, Holding]]:
        """Every ``(source id, holding)`` of the sink, for a full comparison with the target (reconcile)."""

    def count(self) -> int:
        """How many records the sink holds."""


@attrs.define
class RunInfo:
    """One run of one instance, as cross-cutting plugins see it.

    :param instance: the instance name (``-n``).
    :param run_id: unique id of this run; in every log line and the report.
    :param mode: ``incremental``, ``historical``, ``reconcile`` or ``replay``.
    :param dry_run: True when nothing may be sent or stored.
    :param sinks: the names of the sinks this run feeds.
    :param started: when the run started (aware UTC); sinks use it as the export time.
    :param logger: the run's logger (instance and run id in every line).
    :param reconcile: True when this run also reconciles (``--reconcile``, or
        ``export.reconcile_every`` has passed): a sink may then also compare
        what the target has with what it holds, and repair the difference.
    """

    instance: str
    run_id: str
    mode: str
    dry_run: bool
    sinks: tuple[str, ...]
    started: datetime
    logger: logging.LoggerAdapter[Any]
    reconcile: bool = False


@attrs.define
class SinkContext:
    """Everything one sink gets with each hook call.

    :param run: the run this call belongs to.
    :param sink: the configured sink name (``ctia``, ``stdout``, ...).
    :param settings: the sink's parsed settings object.
    :param store: the sink's private key-value store.
    :param holdings: what this sink holds, by source id.
    :param logger: a logger whose lines carry instance, sink and run id.
    :param proxies: ``requests``-style proxies for the sink's traffic, set only
        when the run was started with ``-ep``; ``None`` means no proxy.
    :param notes: values the sink wants in the run report (see :meth:`note`).
    :param namespace: names this instance and what it exports: the instance
        name and the source's scope (for ThreatQ its address and the Data
        Collection's name; a source's settings give it as ``scope``). It is
        the same on every run while those stay the same, and differs between
        two instances even when they export to the same target. Sinks that
        create objects in a target shared by several instances seed their
        ids with it, so no instance ever takes or withdraws another's.
    :param report_only: keys of ``notes`` that stay out of the run summary.
    """

    run: RunInfo
    sink: str
    settings: Any
    store: KeyValueStore
    holdings: HoldingsView
    logger: logging.LoggerAdapter[Any]
    proxies: Mapping[str, str] | None = None
    notes: dict[str, Any] = attrs.field(factory=dict)
    namespace: str = ""
    report_only: set[str] = attrs.field(factory=set)

    @property
    def dry_run(self) -> bool:
        """True when the sink must map and validate but send and store nothing."""
        return self.run.dry_run

    @property
    def now(self) -> datetime:
        """The export time of this run (aware UTC), the same for every record."""
        return self.run.started

    def held(self, record: Indicator | str) -> Holding | None:
        """What this sink holds for ``record`` (a record or a source id), or ``None``."""
        source_id = record if isinstance(record, str) else record.source_id
        return self.holdings.get(source_id)

    def note(self, key: str, value: Any, *, summary: bool = True) -> None:
        """Put ``key: value`` into this sink's section of the run report (JSON-serialisable).

        The run summary on stderr (and so in cron mail) shows every note unless
        ``summary`` is false: use that for values a person needs once but that
        should not be mailed on every run, such as a URL that carries a secret.
        The report file (mode 0600) always has every note.
        """
        self.notes[key] = value
        if summary:
            self.report_only.discard(key)
        else:
            self.report_only.add(key)


def preloaded_holdings(holdings: HoldingsView, source_ids: Iterable[str]) -> ContextManager[Mapping[str, Holding]]:
    """The holdings of a batch in one query; holdings that can preload answer the sink's look-ups from it meanwhile."""
    preload = getattr(holdings, "preloaded", None)
    if preload is not None:
        return preload(source_ids)  # type: ignore[no-any-return]
    return nullcontext(holdings.get_many(source_ids))
