"""``exportkit dlq replay``: offer dead-lettered records to their sink again.

Runs under the instance lock like a normal run and reuses the engine's
bookkeeping: an accepted record leaves the queue and becomes a holding, a
rejected one stays with the new reason, a deferred one stays as it was.
Dead letters of the source (records that could not be read) are not
replayable: they are fixed in the source and come back with the next pull.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from exportkit.config import InstanceConfig
from exportkit.engine import Engine, RunOptions
from exportkit.plugins import PluginRegistry
from exportkit.records import Indicator
from exportkit.report import RunReport, exit_code_for
from exportkit.results import Withdrawal
from exportkit.state import SOURCE_SINK
from exportkit.statestore import instance_lock, open_state

__all__ = ["replay_dead_letters"]


def replay_dead_letters(
    config: InstanceConfig, registry: PluginRegistry, *, sink: str | None = None, report_dir: Path | None = None
) -> RunReport:
    """Replay the dead letters of every sink (or of ``sink``); returns a report like a run's.

    The report is written like a run's (``<instance>.report.json`` in
    ``report_dir``, default the config folder), with ``mode`` ``replay``.
    """
    with instance_lock(config.config_dir, config.name):
        with open_state(config.config_dir, config.name) as state:
            engine = Engine(config, registry, state, RunOptions(), mode="replay")
            engine.prepare()
            state.start_run(engine.run_id, "replay")
            letters = [d for d in state.dead_letters(sink) if d.sink != SOURCE_SINK]
            try:
                for run in engine.sinks:
                    mine = [d for d in letters if d.sink == run.name and d.record]
                    if not mine or not run.open():
                        continue
                    for start in range(0, len(mine), config.export.batch_size):
                        chunk = mine[start : start + config.export.batch_size]
                        writes = [Indicator.from_dict(d.record) for d in chunk if not d.reason.startswith("withdraw:")]
                        pulls = [Withdrawal(d.source_id, "removed", None) for d in chunk if d.reason.startswith("withdraw:") and d.source_id]
                        written = list(zip(writes, run.write(writes)))
                        withdrawn = list(zip(pulls, run.withdraw(pulls)))
                        engine.report.pulled += len(chunk)
                        with engine.transaction():
                            engine.record_outcomes(run, written, withdrawn, {})
                            done = {r.source_id for r, o in written if o.status == "accepted"}
                            done |= {w.source_id for w, o in withdrawn if o.status == "accepted"}
                            state.remove_dead_letters(d.id for d in chunk if d.source_id in done)
            finally:
                for run in engine.sinks:
                    run.close(None)
            with engine.transaction():  # what the sinks stored in open and close
                pass
            report = engine.report
            report.finished = datetime.now(timezone.utc)
            report.sinks = {s.name: s.report() for s in engine.sinks}
            report.exit_code = exit_code_for(report, None)
            state.finish_run(engine.run_id, report.exit_code, report.summary_dict())
            report.write(report_dir or config.config_dir, keep=config.export.keep_reports)
            return report
