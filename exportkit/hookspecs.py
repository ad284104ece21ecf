"""The hooks exportkit calls, in the order they fire. Each docstring is the contract.

Quick start for a sink author (the whole of a working plugin)::

    # pyproject.toml
    [project.entry-points.exportkit]
    mysink = "exportkit_mysink"

    # exportkit_mysink/__init__.py
    import attrs
    from exportkit import SinkType, hookimpl, setting

    @attrs.frozen
    class Settings:
        url: str = setting(help="Where to send records.")

    class MySink:
        def __init__(self, settings):
            self.settings = settings

        @hookimpl
        def exportkit_write(self, records, context):
            for record in records:
                ...  # send record; return a BatchResult for anything not accepted

    @hookimpl
    def exportkit_sink_types():
        return [SinkType("mysink", Settings, MySink, "Sends records to my system.")]

Two kinds of object implement hooks:

* **Entry-point plugins** (a module or object named in the ``exportkit``
  entry-point group) implement the discovery hooks. Those an instance lists in
  ``export.plugins`` also join that instance's runs and may implement the
  run hooks (``exportkit_run_started``, ``exportkit_transform_record``,
  ``exportkit_run_finished``) and wrap the data-path hooks.
* **Sink objects**, built per run from a :class:`~exportkit.context.SinkType`,
  implement the data-path hooks. The engine calls each sink separately, so
  one sink's exception never stops another.

Threads: every data-path hook of one sink object (``exportkit_open``,
``exportkit_check``, ``exportkit_write``, ``exportkit_withdraw``,
``exportkit_verify``, ``exportkit_close``) runs on one thread dedicated to that sink for the whole
run, so a sink may keep thread-bound resources (a ``sqlite3`` connection, a
thread-local client) from ``open`` to ``close``. Different sinks run
concurrently, each on its own thread; never share mutable state between sink
objects without a lock. ``exportkit.testing.SinkHarness`` runs hooks the same
way. Run hooks run on the engine's threads: ``exportkit_transform_record`` on
the thread that pulls, the others on the main thread.

Every hook is called through pluggy, so ``@hookimpl(wrapper=True)``,
``tryfirst``/``trylast`` and ``EXPORTKIT_TRACE_HOOKS=1`` tracing work as
pluggy documents. Whatever a plugin raises is caught where exportkit calls
it: see each hook for what happens then. A plugin whose ``@hookimpl``
matches no spec (a misspelt name, an argument no spec offers) is reported by
name by ``exportkit plugins``, ``exportkit check`` and the run; for a sink,
only that sink is out of the runs that use it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import pluggy

if TYPE_CHECKING:
    import click

    from exportkit.context import RunInfo, SinkContext, SinkType
    from exportkit.records import Indicator
    from exportkit.results import BatchResult, Withdrawal
    from exportkit.sources import SourceType

__all__ = [
    "NAME",
    "hookspec",
    "hookimpl",
    "exportkit_sink_types",
    "exportkit_source_types",
    "exportkit_add_commands",
    "exportkit_run_started",
    "exportkit_transform_record",
    "exportkit_open",
    "exportkit_check",
    "exportkit_write",
    "exportkit_withdraw",
    "exportkit_verify",
    "exportkit_close",
    "exportkit_run_finished",
]

#: the plugin manager's project name, both markers' name and the entry-point group
NAME = "exportkit"
hookspec = pluggy.HookspecMarker(NAME)
hookimpl = pluggy.HookimplMarker(NAME)


# --- Discovery hooks: called on every loaded entry-point plugin ------------------


@hookspec
def exportkit_sink_types() -> Sequence[SinkType]:
    """Describe the sinks this plugin provides.

    Called once when plugins are loaded, for ``exportkit plugins``,
    ``exportkit check`` and every run. Must be cheap and must not touch the
    network.

    :returns: the plugin's :class:`~exportkit.context.SinkType` objects. All
        plugins' lists are collected; a sink name offered twice is an error
        reported for both plugins.
    """
    raise NotImplementedError  # a specification: pluggy never calls it


@hookspec
def exportkit_source_types() -> Sequence[SourceType]:
    """Describe the sources this plugin provides (the values of ``source.type``).

    Called on every loaded entry-point plugin, like
    :func:`exportkit_sink_types`; the built-in ``threatq`` and ``file``
    sources register this way too. Must be cheap and must not touch the network.

    :returns: the plugin's :class:`~exportkit.sources.SourceType` objects; a
        source name offered by two plugins is reported and usable from neither.
    """
    raise NotImplementedError  # a specification: pluggy never calls it


@hookspec
def exportkit_add_commands(cli: click.Group) -> None:
    """Add subcommands to the ``exportkit`` command line.

    Called when the CLI starts, on every loaded entry-point plugin. Add
    commands with ``cli.add_command(...)``; keep them thin, as the core's are.
    The CTIA plugin adds ``exportkit emulate ctia`` this way.

    :param cli: the ``exportkit`` click group. Results are ignored.
    """


# --- Run hooks: entry-point plugins an instance lists in export.plugins -------


@hookspec
def exportkit_run_started(run: RunInfo) -> None:
    """A run has taken its lock and validated its config; no record was pulled yet.

    :param run: the run (instance, run id, mode, sinks, logger). Results are ignored;
        an exception is logged, named in the report's ``plugin_errors`` (the
        run exits 3) and the run goes on.
    """


@hookspec
def exportkit_transform_record(record: Indicator, run: RunInfo) -> Indicator | bool | None:
    """Filter or rewrite one record before it is batched for the sinks.

    Called once per pulled record, on the pulling thread, on each
    implementation in turn (pluggy's order: ``tryfirst`` first, then the last
    registered): each implementation receives the record the previous one
    returned. A ``wrapper`` of this hook wraps each implementation's step.
    An exception, a changed ``source_id`` or a result of another type
    dead-letters that record with the plugin's name and the error; the other
    records go on.

    :param record: the record (frozen; derive a changed one with ``attrs.evolve``).
    :param run: the run.
    :returns: ``None`` or ``True`` to keep the record as it is, ``False`` to
        drop it (it is counted as filtered, not sent), or a new
        :class:`~exportkit.records.Indicator` to use in its place (it must keep
        the same ``source_id``).
    """


# --- Data-path hooks: called on one sink at a time -------------------------------


@hookspec
def exportkit_open(context: SinkContext) -> None:
    """Prepare the sink for this run: open sessions, check credentials.

    Called once per run per sink, before its first batch, even for a dry run
    (then check what can be checked without sending). Raise
    :class:`~exportkit.errors.SinkAuthError` or
    :class:`~exportkit.errors.SinkError` to take this sink out of the run (its
    records are deferred, other sinks go on); raise
    :class:`~exportkit.errors.TransientError` when the target is unreachable.

    :param context: this sink's context; settings are already validated.
    :returns: nothing; results are ignored.
    """


@hookspec
def exportkit_check(context: SinkContext) -> Sequence[str] | None:
    """Check the sink's endpoints and credentials for ``exportkit check``.

    Called instead of a run, after ``exportkit_open`` succeeded. Raise
    :class:`~exportkit.errors.ExportkitError` with a clear message for a
    failed check.

    :param context: this sink's context (a dry-run context: nothing may be written).
    :returns: lines describing what was checked and found (endpoint reached,
        token obtained, feed URL, ...). Lines from every wrapper are joined.
    """


@hookspec
def exportkit_write(records: Sequence[Indicator], context: SinkContext) -> BatchResult | None:
    """Deliver one batch of live records (changed or new since the sink last held them).

    Called once per batch per sink, in the source's order. Records the sink
    already holds with the same content are left out by the engine, so the
    batch may be smaller than ``batch_size``, but never empty. Honour
    ``context.dry_run``: map and validate, send nothing, create nothing.

    ``accepted`` means stored: when this hook returns, every record it
    accepts is in the target, where a new sink object would find it (the
    engine then moves the checkpoint past it). Never keep accepted records
    to store them in :func:`exportkit_close`.

    Retry transient transport errors inside the sink (with backoff, honouring
    ``Retry-After``); when retries are spent, report the records ``deferred``
    or raise :class:`~exportkit.errors.TransientError` (all records of the
    batch are then deferred). Raise :class:`~exportkit.errors.SinkError` only
    when this sink cannot go on in this run.

    :param records: frozen records, shared with other sinks; never change them.
    :param context: this sink's context; ``context.held(record)`` gives the
        remote ids stored when the sink accepted an earlier version.
    :returns: a :class:`~exportkit.results.BatchResult` with an outcome per
        record, or ``None`` when every record was accepted. Records it does
        not mention count as accepted. ``accepted`` means durable: the
        target holds the record when this hook returns (nothing is left for
        ``exportkit_close`` to save), because the engine records it as held
        and never sends the same content again.
    """


@hookspec
def exportkit_withdraw(withdrawals: Sequence[Withdrawal], context: SinkContext) -> BatchResult | None:
    """Make records stop being live in the target (expired, or gone from the collection).

    Called after the writes of a batch, and for a reconcile pass, with only
    records this sink holds. Same retry, dry-run and error rules as
    :func:`exportkit_write`. An ``accepted`` outcome means the record is no
    longer live in the target when this hook returns; the engine then forgets
    the holding. ``deferred`` keeps it, and the withdrawal is tried again next run.

    :param withdrawals: :class:`~exportkit.results.Withdrawal` objects (source
        id, reason, last record if known). A record gone from the collection
        comes without a record, so what a withdrawal needs must be in the
        ``remote`` the sink returned on accepting it:
        ``context.held(w.source_id).remote``.
    :param context: this sink's context.
    :returns: a :class:`~exportkit.results.BatchResult`, or ``None`` when all were withdrawn.
    """


@hookspec
def exportkit_verify(source_ids: Sequence[str], context: SinkContext) -> BatchResult | None:
    """Check that what the sink holds for these records is still live in the target; repair what is not.

    Optional. Called during a reconcile pass, after its withdrawals, with
    ids of records this sink holds that are still in the collection (at most
    ``export.verify_sample`` per pass, in batches of ``batch_size``). The
    records themselves are not pulled; ``context.held(source_id)`` gives what
    the sink stored when it accepted them. Read the target in bulk, not one
    request per record. Same retry, dry-run and error rules as
    :func:`exportkit_write`.

    :param source_ids: ids of held records to verify.
    :param context: this sink's context.
    :returns: a :class:`~exportkit.results.BatchResult`, or ``None`` when all
        were fine. ``accepted`` with ``remote`` means the sink repaired the
        record (the engine stores the new remote ids for the version it holds);
        ``accepted`` without ``remote`` (or not mentioned) means it is live as
        held; ``deferred`` means it could not be checked now (the reconcile
        counts as incomplete); ``rejected`` means it is not live and could not
        be repaired (counted, with the reason, in the report).
    """


@hookspec
def exportkit_close(context: SinkContext, error: BaseException | None) -> None:
    """Release sessions and files. Always called once per opened sink, also after a failure.

    Store nothing here: what the sink accepted is stored already (see
    :func:`exportkit_write`), so close only lets go and must not raise.

    :param context: this sink's context; anything put in ``context.notes``
        here still reaches the run report.
    :param error: the exception that stopped this sink's run, or ``None``.
        An exception raised here becomes this sink's error in the run report
        and makes the run partial (exit 3): close must only release, since
        accepted records were already durable.
    :returns: nothing; results are ignored.
    """


# --- End of run -------------------------------------------------------------------


@hookspec
def exportkit_run_finished(run: RunInfo, report: dict[str, Any]) -> None:
    """The run is over and its report written; the lock is still held.

    :param run: the run.
    :param report: the run report as written to the log folder (read-only by
        convention). Results are ignored; an exception is logged, added to
        the report's ``plugin_errors`` (the report is written again) and makes
        the run partial (exit 3).
    """
