"""``[export] metrics_file`` through the real CLI: node_exporter's text file after each run."""

from __future__ import annotations

import json

import pytest

from exportkit.metrics import read_counters
from exportkit.testing import make_indicators

from .conftest import file_instance

pytestmark = pytest.mark.integration


def test_each_run_leaves_a_metrics_file(tmp_path, cli):
    with open(tmp_path / "records.jsonl", "w") as fh:
        for record in make_indicators(20):
            fh.write(json.dumps(record.to_dict()) + "\n")
    (tmp_path / "textfile").mkdir()
    file_instance(tmp_path, "inst", {"stdout": {"path": "out.jsonl"}}, export={"metrics_file": "textfile/exportkit_inst.prom"})
    for _ in range(2):
        result = cli("run", "-n", "inst", "-c", ".")
        assert result.returncode == 0, result.stderr
    samples = read_counters(tmp_path / "textfile" / "exportkit_inst.prom")
    key = lambda name, **labels: (name, tuple(sorted({"instance_name": "inst", **labels}.items())))  # noqa: E731
    assert samples[key("exportkit_records_total", sink="stdout", outcome="accepted")] == 20
    assert samples[key("exportkit_last_run_records", sink="stdout", outcome="unchanged")] >= 1
    assert samples[key("exportkit_runs_total", exit_code="0")] == 2
    assert samples[key("exportkit_last_success_timestamp_seconds")] > 0
