"""Reconcile: withdraw what sinks hold but the collection no longer has, and let sinks verify the rest.

One pass reads the ids in the collection now (the source reads ids only,
with a progress line of its own) and withdraws, per sink, every held id not
among them. An incomplete read withdraws nothing: an id not read is not an id
removed. Sinks that implement ``exportkit_verify`` then check a sample of what
they hold (``[export] verify_sample``) and repair what is no longer live; their
repairs are stored as holdings. A first run skips the pass: nothing is held,
so nothing can have left.

The engine decides when (:meth:`Reconcile.due`) and calls :meth:`Reconcile.run`
after the pull; the outcomes go through the engine's own bookkeeping
(:meth:`~exportkit.engine.Engine.record_outcomes`), in its transactions.
"""

from __future__ import annotations

import random
from datetime import timedelta
from typing import TYPE_CHECKING

from exportkit.context import preloaded_holdings
from exportkit.plan import action_for
from exportkit.progress import Progress
from exportkit.results import CONFIRMED, Withdrawal
from exportkit.secrets import redact
from exportkit.sinkrun import SinkRun
from exportkit.sources import IncompleteRead, Source

if TYPE_CHECKING:
    from exportkit.engine import Engine

__all__ = ["Reconcile"]


class Reconcile:
    """The reconcile pass of one run (see the module docstring)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def due(self) -> bool:
        """Whether this run reconciles: asked for (``--reconcile``), or an incremental run whose ``reconcile_every`` has passed."""
        if self.engine.options.reconcile:
            return True
        every = self.engine.config.export.reconcile_every
        if self.engine.mode != "incremental" or every is None or every <= timedelta(0):
            return False
        last = self.engine.state.last_reconcile
        return last is None or self.engine.started - last >= every

    def skip(self) -> None:
        """A first run: nothing was held, so nothing can have left the collection; the schedule starts now."""
        self.engine.log.info("reconcile skipped: no sink held anything before this run")
        self.engine.report.reconcile = {"ran": False, "skipped": "no sink held anything before this run"}
        if not self.engine.options.dry_run:
            self.engine.state.set_last_reconcile(self.engine.started)

    def _current_ids(self, source: Source) -> set[str]:
        """The ids in the collection now (the source reads ids only), with a progress line of their own."""
        current: set[str] = set()
        for source_id in source.current_ids():
            current.add(source_id)
            if self.engine.options.progress and len(current) % 1000 == 0:
                self.engine.options.progress(Progress("reconcile", len(current), None))
        if self.engine.options.progress:
            self.engine.options.progress(Progress("reconcile", len(current), None))
        return current

    def run(self, source: Source) -> None:
        """Withdraw what sinks hold but the collection no longer has."""
        live = [s for s in self.engine.sinks if not s.down]
        if not live:
            return
        self.engine.log.info("reconcile: reading the ids in the collection")
        try:
            current = self._current_ids(source)
        except IncompleteRead as exc:
            # An id not read is not an id removed: withdrawing now would expire live verdicts.
            self.engine.log.error("reconcile refused, nothing withdrawn: %s", redact(str(exc)))
            self.engine.report.reconcile = {"ran": False, "refused": redact(str(exc)), "read": exc.read, "in_collection": exc.total}
            return
        complete = True
        removed_total = 0
        verified: dict[str, int] = {}
        repaired: dict[str, int] = {}
        unrepaired: dict[str, int] = {}
        size = self.engine.config.export.batch_size
        for sink in live:
            held = self.engine.state.held_ids(sink.name)
            gone = sorted(held - current)
            removed_total += len(gone)
            for start in range(0, len(gone), size):
                chunk = [Withdrawal(sid, "removed", None) for sid in gone[start : start + size]]
                with preloaded_holdings(sink.context.holdings, [w.source_id for w in chunk]):
                    outcomes = sink.withdraw(chunk)
                if self.engine.options.plan:
                    for withdrawal, outcome in zip(chunk, outcomes):
                        action = action_for(outcome.status, held=True, withdrawal=True)
                        self.engine.options.plan.add(sink.name, withdrawal.source_id, None, action, outcome.reason or "removed from the collection")
                confirmed: dict[str, bool] = {}
                with self.engine.transaction():
                    self.engine.record_outcomes(sink, [], list(zip(chunk, outcomes)), confirmed)
                complete = complete and all(o.status in CONFIRMED for o in outcomes)
            if sink.verifies and not sink.down:
                checked, fixed, failed, done = self._verify(sink, held & current)
                verified[sink.name], repaired[sink.name], unrepaired[sink.name] = checked, fixed, failed
                complete = complete and done
        self.engine.report.reconcile = {
            "ran": True, "in_collection": len(current), "removed": removed_total, "complete": complete,
            "verified": verified, "repaired": repaired, "unrepaired": unrepaired,
        }
        if complete and not self.engine.options.dry_run:
            self.engine.state.set_last_reconcile(self.engine.started)

    def _verify(self, sink: SinkRun, ids: set[str]) -> tuple[int, int, int, bool]:
        """Ask ``sink`` to verify (a sample of) what it holds; store its repairs.

        :returns: ``(verified, repaired, unrepaired, complete)``; ``unrepaired``
            counts records the sink found not live and could not repair now
            (deferred or rejected): they make the run partial.
        """
        sample = self.engine.config.export.verify_sample
        chosen = sorted(ids) if len(ids) <= sample else sorted(random.sample(sorted(ids), sample))
        size = self.engine.config.export.batch_size
        repaired, unrepaired, complete = 0, 0, True
        for start in range(0, len(chosen), size):
            chunk = chosen[start : start + size]
            outcomes = sink.verify(chunk)
            fixed = [o for o in outcomes if o.status == "accepted" and o.remote is not None]
            for outcome in outcomes:
                if outcome.status in ("rejected", "deferred"):
                    unrepaired += 1
                    sink.counters.reasons[f"verify: {outcome.reason}"[:160]] += 1
            complete = complete and all(o.status != "deferred" for o in outcomes)
            repaired += len(fixed)
            if fixed and not self.engine.options.dry_run:
                held = sink.context.holdings.get_many([o.source_id for o in fixed])
                with self.engine.transaction():
                    self.engine.state.put_holdings(sink.name, [(o.source_id, held[o.source_id].content_hash, o.remote) for o in fixed if o.source_id in held])
        return len(chosen), repaired, unrepaired, complete
