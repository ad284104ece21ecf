"""The run: pull -> batch -> fan out to each sink -> confirm -> checkpoint -> report.

:func:`run_instance` is the whole job of ``exportkit run``. Its guarantees:

* The instance lock is held for the whole run (a second run gets exit 4).
* Config and every sink's settings are validated before any network call.
* The source is pulled in a background thread into a bounded queue, so the
  next page is fetched while the current batch is sent and memory stays flat.
* Each sink gets only what changed for it: a record it holds with the same
  content hash is not sent again. Expired records go to the withdraw hook
  (only for sinks that hold them), live ones to the write hook.
* Sinks are isolated: one sink's exception or outage defers its records and
  never stops another sink. Each sink runs on its own thread for the whole
  run (:mod:`exportkit.sinkrun`); sinks run concurrently with each other.
* Plugins are contained: whatever a plugin raises is caught at the boundary
  (:mod:`exportkit.sinkrun` for sinks, :mod:`exportkit.runhooks` for run
  hooks and transforms), named in the report, and the report is always written.
* State is written per batch in one transaction: holdings, dead letters and
  the checkpoint, which moves only past records that every sink confirmed
  (accepted, skipped or rejected). A deferred record holds it.
* Historical windows and dry runs never move the checkpoint; dry runs write
  no state at all.
* The reconcile pass (what left the collection is withdrawn, sinks verify
  what they hold) is :mod:`exportkit.reconcile`; the engine says when.
"""

from __future__ import annotations

import threading
import traceback
import uuid
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

import attrs

from exportkit.config import InstanceConfig
from exportkit.context import RunInfo, SinkContext, instance_namespace, preloaded_holdings
from exportkit.crashpoints import crash_point
from exportkit.errors import ExportkitError, SourceError
from exportkit.logs import run_logger
from exportkit.metrics import write_metrics
from exportkit.plan import PlanWriter, action_for
from exportkit.plugins import PluginRegistry, build_instance_manager, validate_plugin
from exportkit.progress import Progress
from exportkit.pull import pull_batches
from exportkit.reconcile import Reconcile
from exportkit.gcpolicy import fewer_collections
from exportkit.records import Indicator
from exportkit.report import EXIT_PARTIAL, RunReport, exit_code_for
from exportkit.results import CONFIRMED, Outcome, Withdrawal
from exportkit.secrets import redact
from exportkit.runhooks import RunHooks
from exportkit.sinkrun import SinkRun, on_each
from exportkit.sources import BadRecord, PullItem, Source
from exportkit.state import SOURCE_SINK, Checkpoint, DryRunStore
from exportkit.statestore import StateStore, instance_lock, open_state
from exportkit.transport import abort_reason, abort_requests, reset_abort

__all__ = ["RunOptions", "Progress", "run_instance", "Engine"]

@attrs.frozen
class RunOptions:
    """How to run.

    :param historical: ``(from, to)`` for a fixed window that never moves the checkpoint; ``to`` may be None (now).
    :param dry_run: map and validate, send and store nothing.
    :param reconcile: also look for records removed from the collection, whatever the schedule.
    :param use_proxy: apply the instance's ``export.proxy`` to sink traffic (``-ep``).
    :param progress: called with a :class:`Progress` after each batch.
    :param should_stop: asked after each batch; when it returns True the run stops
        cleanly there (state saved, sinks closed, the rest deferred to the next run).
    :param plan: with ``dry_run``, where each sink's decision on each record goes
        (:class:`~exportkit.plan.PlanWriter`).
    """

    historical: tuple[datetime, datetime | None] | None = None
    dry_run: bool = False
    reconcile: bool = False
    use_proxy: bool = False
    progress: Callable[[Progress], None] | None = None
    should_stop: Callable[[], bool] | None = None
    plan: PlanWriter | None = None



class Engine:
    """One run of one instance; build with the config and registry, then :meth:`run` (lock and state held by the caller)."""

    def __init__(
        self, config: InstanceConfig, registry: PluginRegistry, state: StateStore, options: RunOptions, *, mode: str | None = None
    ) -> None:
        """
        :param mode: the run's mode for the report and ``RunInfo``; by default
            ``historical`` for a historical window, else ``incremental``
            (``replay`` for :mod:`exportkit.replay`). Only ``incremental``
            moves the checkpoint.
        """
        self.config = config
        self.registry = registry
        self.state = state
        self.options = options
        self.run_id = uuid.uuid4().hex[:12]
        self.started = datetime.now(timezone.utc)
        self.mode = mode or ("historical" if options.historical else "incremental")
        self.log = run_logger("engine", instance=config.name, run_id=self.run_id)
        self.report = RunReport(instance=config.name, run_id=self.run_id, mode=self.mode, dry_run=options.dry_run, started=self.started)
        self.sinks: list[SinkRun] = []
        self._checkpoint_frozen = False
        self._checkpoint: Checkpoint | None = state.checkpoint
        self._pulled = 0
        #: True when the run ended early on request (should_stop)
        self.stopped = False
        self.reconciler = Reconcile(self)

    # --- setup ----------------------------------------------------------------------

    def prepare(self) -> None:
        """Build this run's sinks (:attr:`sinks`), plugin manager and run hooks; calls no hook.

        A sink that cannot be created or fails hook validation is in
        :attr:`sinks` already down, with the reason as its error.

        :raises ExportkitError: a plugin named in ``export.plugins`` is not installed.
        """
        types = self.registry.sink_types
        objects: dict[str, object] = {}
        failed: dict[str, str] = {}
        for name, settings in self.config.sinks.items():
            type_name = self.config.sink_type_of(name)
            try:
                obj = types[type_name].factory(settings)
            except Exception as exc:
                failed[name] = f"could not be created: {type(exc).__name__}: {redact(str(exc))}"
                continue
            problem = validate_plugin(obj, f"sink:{name}")
            if problem is not None:  # a misspelt hook or a wrong signature: this sink only is out
                origin = self.registry.origin(type_name)
                owner = f"plugin {origin.name} ({origin.distribution or 'unknown distribution'})" if origin else "its plugin"
                failed[name] = f"sink type {type_name} of {owner} fails hook validation: {problem}"
                self.log.error("sink %s cannot join the run: %s", name, failed[name])
                continue
            objects[name] = obj
        extra = {}
        for name in self.config.export.plugins:
            plugin = self.registry.plugin(name)
            if plugin is None:
                why = self.registry.unavailable.get(name, "is not installed")
                raise ExportkitError(f"plugin {name!r} named in export.plugins {why}")
            extra[name] = plugin.obj
        pm = build_instance_manager(objects, extra, logger=self.log)
        self.pm = pm
        proxies = None
        if self.options.use_proxy and self.config.export.proxy:
            proxies = {"http": self.config.export.proxy, "https": self.config.export.proxy}
        self.run_info = RunInfo(
            instance=self.config.name,
            run_id=self.run_id,
            mode=self.mode,
            dry_run=self.options.dry_run,
            sinks=tuple(self.config.sinks),
            started=self.started,
            logger=self.log,
            reconcile=self.reconciler.due(),
        )
        self.run_hooks = RunHooks(pm, self.run_info, self.log)
        namespace = instance_namespace(self.config.name, self.config.source_type.name, self.config.source)
        for name in self.config.sinks:
            store: Any = self.state.store(name)
            if self.options.dry_run:
                store = DryRunStore(store)
            context = SinkContext(
                run=self.run_info,
                sink=name,
                settings=self.config.sinks[name],
                store=store,
                holdings=self.state.holdings(name),
                logger=run_logger(f"sink.{name}", instance=self.config.name, run_id=self.run_id, sink=name),
                proxies=proxies,
                namespace=namespace,
            )
            sink = SinkRun(name, objects.get(name), context, pm)
            if name in failed:
                sink.error = failed[name]
            self.sinks.append(sink)

    # --- the run --------------------------------------------------------------------

    def run(self) -> RunReport:
        """Run once; never raises for sink or plugin problems (they are in the report).

        :raises SourceError: the source failed (also in the report, exit 1).
        :raises ExportkitError: a config problem found at run time (also in the report).
        :raises Exception: a bug outside every plugin boundary (in the report and the log).
        """
        reset_abort()
        # The whole-run deadline: cut what is in flight and stop like on SIGTERM.
        limit = self.config.export.run_deadline
        deadline = threading.Timer(limit.total_seconds(), abort_requests, args=(f"the run deadline of {_duration(limit)} was reached",))
        deadline.daemon = True
        deadline.start()
        try:
            return self._run()
        finally:
            deadline.cancel()

    def _run(self) -> RunReport:
        error: BaseException | None = None
        source: Source | None = None
        try:
            self.prepare()
            if not self.options.dry_run:
                self.state.start_run(self.run_id, self.mode)
            source = self.config.source_type.factory(
                self.config.source, config_dir=self.config.config_dir, logger=run_logger("source", instance=self.config.name, run_id=self.run_id)
            )
            self.run_hooks.started()
            source.open()
            on_each(self.sinks, SinkRun.open)  # concurrently, each on its own thread
            source_clock = self._source_clock(source)
            since, until = self._window(source_clock or self.started)
            self.report.window = {"since": since, "until": until}
            if source_clock is not None:
                # How far the source's clock is from this host's (positive: ahead), for operators.
                self.report.window["source_clock_offset_s"] = round((source_clock - datetime.now(timezone.utc)).total_seconds())
            self.report.checkpoint_before = self._checkpoint
            if self.sinks and all(s.down for s in self.sinks):
                # Pulling would only defer every record: leave the checkpoint and the
                # source alone until a sink works again.
                self.report.error = "no sink could be opened; nothing was pulled: " + "; ".join(f"{s.name}: {s.error}" for s in self.sinks)
                self.log.error("%s", self.report.error)
            else:
                # Read before the pull: a sink that held nothing when the run began holds only
                # what this run pulled from the collection, so a scheduled reconcile could find
                # nothing (one asked for with --reconcile still runs, and verifies).
                held_before = any(_holds_any(self.state, s.name) for s in self.sinks if not s.down)
                self._pull_and_send(source, since, until)
                if self.reconciler.due() and not self.stopped:
                    if held_before or self.options.reconcile:
                        self.reconciler.run(source)
                    else:
                        self.reconciler.skip()
        except BaseException as exc:
            error = exc
            raise
        finally:
            try:
                on_each(self.sinks, lambda sink: sink.close(error))
            except Exception as exc:  # close contains the sink's errors; this would be a bug of ours
                self.log.error("closing the sinks failed: %s", redact("".join(traceback.format_exception(exc))))
            self._save_sink_stores(error)
            if source is not None:
                try:
                    source.close()
                except Exception as exc:
                    self.log.warning("source close failed: %s", redact(str(exc)))
            self._finish(error)
        return self.report

    def _save_sink_stores(self, error: BaseException | None) -> None:
        """Commit what sinks stored since the last batch (in open, close, an empty run), unless the run failed."""
        if error is not None:
            self.state.discard_sink_stores()  # their batch never committed: keep store and holdings in step
            return
        try:
            with self.transaction():
                pass
        except Exception as exc:  # a state error must not hide the run's report
            self.log.error("could not save the sink stores: %s", redact(str(exc)))

    def _source_clock(self, source: Source) -> datetime | None:
        """The source's own clock when it has one (``now()``); ``None`` for this host's.

        The window must end at the time of the clock that stamps the records:
        a source clock ahead of this host's would otherwise delay changes by a run.
        """
        clock = getattr(source, "now", None)
        value = clock() if callable(clock) else None
        return value if isinstance(value, datetime) else None

    def _window(self, now: datetime) -> tuple[datetime | None, datetime | None]:
        if self.options.historical:
            start, end = self.options.historical
            return start, end or now
        if self._checkpoint is None:
            return None, now
        since = self._checkpoint.updated_at - self.config.export.overlap
        if now < self._checkpoint.updated_at:
            # The source's clock was set back: its new changes may be stamped before
            # the checkpoint. The overlap covers a clock set back by less than itself.
            self.log.warning("the source's clock (%s) is behind the checkpoint (%s); changes stamped before %s "
                             "are not read: raise export.overlap if it went back further",
                             now.isoformat(), self._checkpoint.updated_at.isoformat(), since.isoformat())
        return since, now

    def _batches(self, source: Source, since: datetime | None, until: datetime | None) -> Iterator[list[PullItem]]:
        transform = self.run_hooks.transform if self.run_hooks.transforms else None
        return pull_batches(source, since, until, self.config.export.batch_size, transform)

    def _pull_and_send(self, source: Source, since: datetime | None, until: datetime | None) -> None:
        try:
            for batch in self._batches(source, since, until):
                self._process_batch(batch)
                self._pulled += len(batch)
                if self.options.progress:
                    self.options.progress(Progress("pull", self._pulled, source.total))
                if abort_reason() is not None or (self.options.should_stop and self.options.should_stop()):
                    self.stopped = True
                    self.log.warning("stop requested: ending after the batch just saved; the rest is deferred to the next run")
                    break
        finally:
            self.report.filtered = self.run_hooks.filtered
        self.report.source_total = source.total

    def _process_batch(self, batch: list[PullItem]) -> None:
        bad = [item for item in batch if isinstance(item, BadRecord)]
        records: dict[str, Indicator] = {}
        for item in batch:
            if isinstance(item, Indicator):
                records.pop(item.source_id, None)  # a later version in the same batch wins
                records[item.source_id] = item
        ordered = list(records.values())
        self.report.pulled += len(ordered)
        self.report.bad += len(bad)
        confirmed = {r.source_id: True for r in ordered}
        now = self.started

        def work(sink: SinkRun) -> tuple[SinkRun, list[tuple[Indicator, Outcome]], list[tuple[Withdrawal, Outcome]]]:
            # One query for the batch's holdings; the sink's own look-ups are answered from it.
            with preloaded_holdings(sink.context.holdings, records) as held:
                to_write, to_withdraw = [], []
                plan = self.options.plan
                for record in ordered:
                    holding = held.get(record.source_id)
                    if record.is_expired(now):
                        if holding is not None:
                            to_withdraw.append(Withdrawal(record.source_id, "expired", record))
                        else:
                            sink.counters.count(Outcome(record.source_id, "skipped", "expired: never sent"))
                            if plan:
                                plan.add(sink.name, record.source_id, record, "skip", "expired: never sent")
                    elif holding is not None and holding.content_hash == record.content_hash:
                        sink.counters.unchanged += 1
                        if plan:
                            plan.add(sink.name, record.source_id, record, "unchanged")
                    else:
                        to_write.append(record)
                written = list(zip(to_write, sink.write(to_write)))
                withdrawn = list(zip(to_withdraw, sink.withdraw(to_withdraw)))
                if plan:
                    for record, outcome in written:
                        plan.add(sink.name, record.source_id, record, action_for(outcome.status, held=record.source_id in held), outcome.reason)
                    for withdrawal, outcome in withdrawn:
                        plan.add(sink.name, withdrawal.source_id, withdrawal.record, action_for(outcome.status, held=True, withdrawal=True), outcome.reason or withdrawal.reason)
            return sink, written, withdrawn

        results = on_each(self.sinks, work)  # every sink at once, each on its own thread
        with self.transaction():
            for sink, written, withdrawn in results:
                self.record_outcomes(sink, written, withdrawn, confirmed)
            self.report.dead_lettered += len(bad)
            if bad and not self.options.dry_run:  # a dry run stores none, so it claims none as new
                self.report.dead_lettered_new += self.state.add_dead_letters(SOURCE_SINK, [(b.source_id, b.reason, b.raw) for b in bad], self.run_id)
            self._advance_checkpoint(ordered, confirmed)
        crash_point("checkpoint-written")

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """The state transaction for one batch's bookkeeping (none in a dry run).

        The sink stores' pending writes commit with it: they belong to the
        hooks that ran since the last one, and no hook runs during it.
        """
        if self.options.dry_run:
            yield
            return
        with self.state.transaction():
            yield
            self.state.flush_sink_stores()

    def record_outcomes(
        self, sink: SinkRun, written: list[tuple[Indicator, Outcome]], withdrawn: list[tuple[Withdrawal, Outcome]], confirmed: dict[str, bool]
    ) -> None:
        """Count outcomes and store what they mean (call inside :meth:`transaction`).

        Accepted writes become holdings (clearing the sink's dead letter for
        that record), accepted withdrawals drop them, rejections are
        dead-lettered; in a dry run only the counters change. ``confirmed``
        (source id -> bool) is set to False for every record not confirmed.
        """
        keep: list[tuple[str, str, Any]] = []
        dead: list[tuple[str, str, dict[str, Any] | None]] = []
        cleared: list[str] = []
        dropped: list[str] = []
        for record, outcome in written:
            sink.counters.count(outcome)
            if outcome.status == "accepted":
                keep.append((record.source_id, record.content_hash, outcome.remote))
                cleared.append(record.source_id)
            elif outcome.status == "rejected":
                dead.append((record.source_id, outcome.reason or "rejected", record.to_dict()))
            if outcome.status not in CONFIRMED:
                confirmed[record.source_id] = False
        for withdrawal, outcome in withdrawn:
            sink.counters.count(outcome, withdrawal=True)
            if outcome.status == "accepted":
                dropped.append(withdrawal.source_id)
            elif outcome.status == "rejected":
                last_seen = withdrawal.record.to_dict() if withdrawal.record else None
                dead.append((withdrawal.source_id, f"withdraw: {outcome.reason}", last_seen))
            if outcome.status not in CONFIRMED and withdrawal.source_id in confirmed:
                confirmed[withdrawal.source_id] = False
        self.report.dead_lettered += len(dead)
        if self.options.dry_run:  # counted as would-be dead letters; none stored, so none new
            return
        self.state.put_holdings(sink.name, keep)
        self.state.drop_holdings(sink.name, dropped)
        crash_point("holdings-written")
        self.state.clear_dead_letter(sink.name, cleared)
        if dead:
            self.report.dead_lettered_new += self.state.add_dead_letters(sink.name, dead, self.run_id)

    def _advance_checkpoint(self, ordered: list[Indicator], confirmed: dict[str, bool]) -> None:
        if self.mode != "incremental" or self._checkpoint_frozen:
            return
        for record in ordered:
            if not confirmed[record.source_id]:
                self._checkpoint_frozen = True
                self.log.info("checkpoint held before record %s (not confirmed by every sink)", record.source_id)
                break
            candidate = Checkpoint(record.updated_at, record.source_id)
            if self._checkpoint is None or record.position > self._checkpoint.position:
                self._checkpoint = candidate
        if not self.options.dry_run and self._checkpoint is not None:
            self.state.set_checkpoint(self._checkpoint)

    # --- end ----------------------------------------------------------------------------

    def _finish(self, error: BaseException | None) -> None:
        self.report.finished = datetime.now(timezone.utc)
        self.report.sinks = {s.name: s.report() for s in self.sinks}
        if hasattr(self, "run_hooks"):
            self.report.plugin_errors = list(self.run_hooks.errors)
        moves = self.mode == "incremental" and not self.options.dry_run  # a dry run moves nothing
        self.report.checkpoint_after = self._checkpoint if moves else self.report.checkpoint_before
        aborted = abort_reason()
        if aborted is not None and not isinstance(error, KeyboardInterrupt):
            # Requests were cut on purpose (SIGTERM, the run deadline): a clean, partial stop.
            if error is not None:
                self.log.warning("stopped: %s (%s)", aborted, redact(str(error)))
            self.report.error = f"stopped before the end: {aborted}; the rest is deferred to the next run"
            error = None
        elif error is not None:
            self.report.error = redact(str(error)) or type(error).__name__
            if not isinstance(error, (SourceError, ExportkitError, KeyboardInterrupt)):
                # A bug (ours or a plugin's outside every hook boundary): the traceback
                # goes to the log, never to the terminal.
                self.report.error = f"{type(error).__name__}: {self.report.error}"
                self.log.error("run failed: %s", redact("".join(traceback.format_exception(error))))
        elif self.stopped:
            self.report.error = "stopped on request before the end; the rest is deferred to the next run"
        self.report.exit_code = exit_code_for(self.report, error)
        if not self.options.dry_run:
            try:
                self.state.finish_run(self.run_id, self.report.exit_code, self.report.summary_dict())
            except Exception as exc:  # never hide the run's own error behind a state error
                self.log.error("could not record the run: %s", exc)

    def announce_finished(self) -> bool:
        """Tell plugins the run is over (after the report is written).

        :returns: True when a plugin failed in ``exportkit_run_finished`` (the
            report then needs writing again, with that error in it).
        """
        if not hasattr(self, "run_hooks"):
            return False
        before = len(self.run_hooks.errors)
        self.run_hooks.finished(self.report.as_dict())
        if len(self.run_hooks.errors) == before:
            return False
        self.report.plugin_errors = list(self.run_hooks.errors)
        self.report.exit_code = max(self.report.exit_code, exit_code_for(self.report, None))
        return True


def _holds_any(state: Any, sink: str) -> bool:
    """Whether ``sink`` holds anything: one indexed look-up where the backend offers it."""
    holds_any = getattr(state, "holds_any", None)
    return bool(holds_any(sink)) if holds_any is not None else bool(state.held_ids(sink))


def _duration(value: timedelta) -> str:
    seconds = int(value.total_seconds())
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def run_instance(
    config: InstanceConfig,
    registry: PluginRegistry,
    options: RunOptions = RunOptions(),
    *,
    report_dir: Path | None = None,
) -> RunReport:
    """Lock the instance, open its state, run once, write the report.

    :param config: the validated instance config.
    :param registry: discovered plugins (sink types).
    :param options: how to run.
    :param report_dir: where to write ``<instance>.report.json`` (default: the config folder).
    :raises LockedError: another run holds the lock.
    :returns: the report; its ``exit_code`` is what the CLI exits with. A source
        failure is in the report (exit 1), not raised.
    """
    with instance_lock(config.config_dir, config.name), fewer_collections():
        with open_state(config.config_dir, config.name) as state:
            engine = Engine(config, registry, state, options)
            try:
                engine.run()
            except (SourceError, ExportkitError) as exc:
                engine.log.error("run failed: %s", redact(str(exc)))
            except KeyboardInterrupt:
                engine.log.error("run interrupted; state is saved up to the last completed batch")
                engine.report.error = "interrupted; state is saved up to the last completed batch"
                engine.report.exit_code = EXIT_PARTIAL
            except Exception:  # a bug: Engine.run put it in the report (exit 1) and the log
                pass
            report = engine.report
            folder = report_dir or config.config_dir
            report.write(folder, keep=config.export.keep_reports)
            if engine.announce_finished():  # a plugin failed in run_finished: the report says so
                report.write(folder, keep=config.export.keep_reports)
            if config.export.metrics_file:
                _write_metrics(Path(config.export.metrics_file), report, engine.log)
            return report


def _write_metrics(path: Path, report: RunReport, log: Any) -> None:
    """Metrics are for watching runs; failing to write them never changes a run's outcome."""
    try:
        write_metrics(path, report)
    except OSError as exc:
        log.warning("cannot write the metrics file %s: %s", path, exc.strerror or exc)

