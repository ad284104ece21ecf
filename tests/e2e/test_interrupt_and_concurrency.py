"""Runs that are stopped, killed, or started twice at once lose nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import file_instance, make_records, read_jsonl, write_jsonl

pytestmark = pytest.mark.integration

COUNT = 40_000
BATCH = 500


@pytest.fixture
def big_instance(tmp_path: Path) -> Path:
    write_jsonl(tmp_path / "records.jsonl", make_records(COUNT))
    file_instance(tmp_path, "big", {"stdout": {"path": "out.jsonl"}}, export={"batch_size": BATCH})
    return tmp_path


def start(folder: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "exportkit", "run", "-n", "big", "-c", "."],
        cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
    )


def wait_for_output(path: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not (path.exists() and path.stat().st_size > 0):
        assert time.monotonic() < deadline, "the run wrote nothing"
        time.sleep(0.02)


def ids(path: Path) -> list[str]:
    return [r["source_id"] for r in read_jsonl(path)]


def test_sigterm_ends_cleanly_after_the_batch_and_the_next_run_finishes_without_duplicates(big_instance):
    proc = start(big_instance)
    wait_for_output(big_instance / "out.jsonl")
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 3, stderr
    assert "Traceback" not in stderr
    report = json.loads((big_instance / "big.report.json").read_text())
    assert "stopped on request" in report["error"]
    first = ids(big_instance / "out.jsonl")
    assert 0 < len(first) < COUNT, "the run must have stopped part way"

    second = subprocess.run([sys.executable, "-m", "exportkit", "run", "-n", "big", "-c", "."], cwd=big_instance, capture_output=True, text=True)
    assert second.returncode == 0, second.stderr
    all_ids = ids(big_instance / "out.jsonl")
    assert len(all_ids) == COUNT and len(set(all_ids)) == COUNT, "every record once, none twice"


def test_a_killed_run_loses_nothing(big_instance):
    proc = start(big_instance)
    wait_for_output(big_instance / "out.jsonl")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    second = subprocess.run([sys.executable, "-m", "exportkit", "run", "-n", "big", "-c", "."], cwd=big_instance, capture_output=True, text=True)
    assert second.returncode == 0, second.stderr
    all_ids = ids(big_instance / "out.jsonl")
    assert set(all_ids) == {str(i) for i in range(1, COUNT + 1)}, "nothing lost"
    # Only the batch in flight when the process died can be delivered twice.
    assert len(all_ids) - COUNT <= 2 * BATCH


def test_two_runs_of_one_instance_at_once_one_exits_4(big_instance):
    first = start(big_instance)
    wait_for_output(big_instance / "out.jsonl")
    second = start(big_instance)
    _, err2 = second.communicate(timeout=60)
    _, err1 = first.communicate(timeout=60)
    assert first.returncode == 0, err1
    assert second.returncode == 4, err2
    assert f"process {first.pid}" in err2
    assert len(ids(big_instance / "out.jsonl")) == COUNT
