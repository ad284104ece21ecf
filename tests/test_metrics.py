"""The Prometheus text file: gauges of the last run, counters carried over runs."""

from __future__ import annotations

import stat
from datetime import datetime, timedelta, timezone

from exportkit.metrics import read_counters, render_metrics, write_metrics
from exportkit.report import RunReport

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def report(exit_code: int, accepted: int, *, at: datetime = T0, instance: str = "prod", dry_run: bool = False) -> RunReport:
    return RunReport(
        instance=instance, run_id="r", mode="incremental", dry_run=dry_run, started=at, finished=at + timedelta(seconds=2),
        pulled=accepted + 1, sinks={"ctia": {"accepted": accepted, "deferred": 1 if exit_code == 3 else 0}}, exit_code=exit_code,
    )


def sample(path, name, **labels):
    return read_counters(path)[(name, tuple(sorted({"instance_name": "prod", **labels}.items())))]


def test_counters_add_up_over_runs_and_the_last_success_survives_failures(tmp_path):
    path = tmp_path / "exportkit_prod.prom"
    write_metrics(path, report(0, 5, at=T0))
    write_metrics(path, report(3, 7, at=T0 + timedelta(hours=1)))
    write_metrics(path, report(1, 0, at=T0 + timedelta(hours=2)))
    assert sample(path, "exportkit_records_total", sink="ctia", outcome="accepted") == 12
    assert sample(path, "exportkit_records_total", sink="ctia", outcome="deferred") == 1
    assert sample(path, "exportkit_runs_total", exit_code="0") == 1
    assert sample(path, "exportkit_runs_total", exit_code="3") == 1
    assert sample(path, "exportkit_runs_total", exit_code="1") == 1
    assert sample(path, "exportkit_last_run_exit_code") == 1
    assert sample(path, "exportkit_last_success_timestamp_seconds") == T0.timestamp()
    assert sample(path, "exportkit_last_run_duration_seconds") == 2
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["exportkit_prod.prom"], "no temporary file is left"


def test_a_dry_run_counts_nothing(tmp_path):
    path = tmp_path / "m.prom"
    write_metrics(path, report(0, 5))
    write_metrics(path, report(0, 9, dry_run=True, at=T0 + timedelta(hours=1)))
    assert sample(path, "exportkit_records_total", sink="ctia", outcome="accepted") == 5
    assert sample(path, "exportkit_runs_total", exit_code="0") == 1
    assert sample(path, "exportkit_last_success_timestamp_seconds") == T0.timestamp()


def test_label_values_are_escaped():
    text = render_metrics(report(0, 1, instance='we"ird\\name'), {})
    assert 'instance_name="we\\"ird\\\\name"' in text
    assert all(line.startswith("#") or line.count("{") == 1 for line in text.splitlines())
