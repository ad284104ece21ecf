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
            # item. ``harness`` wraps a fresh, unopened sink object on the same
            # target: read the target itself (here the folder), not a sink's memory.
            return [...]

        # Optional: a value equal exactly when the target did not change, for the
        # dry-run tests (default: the files under tmp_path plus read_back).
        # def target_state(self, tmp_path): ...

The contract holds a sink to per-record outcomes and to what the target
holds: an accepted record is stored when ``exportkit_write`` returns (a
fresh sink object reads it back before ``exportkit_close`` runs), close does
not raise, a later sink object keeps what an earlier one stored, and a dry
run changes nothing in the target in any hook. The suite needs pytest
(``pip install pytest``), which runs it; nothing else in this package does.

The other pieces work on their own, in any test:

* :func:`make_indicator` / :func:`make_indicators` build valid records;
  override any field (``make_indicator(status="Expired")``).
* :class:`SinkHarness` drives one sink object outside the engine: it builds
  the :class:`~exportkit.context.SinkContext`, calls the hooks through a plugin
  manager (so hook signatures are checked as in a run) on one thread of the
  sink's own from open to close (as in a run), checks the outcomes with the
  engine's own rule and applies them to in-memory holdings as the engine would::

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
:func:`folder_state` snapshots a folder, for a ``target_state`` that combines
files with another part of the target.
"""


from exportkit.testing.contract import SinkContract
from exportkit.testing.factories import FIXED_TIME, make_indicator, make_indicators
from exportkit.testing.harness import MemoryHoldings, MemoryStore, SinkHarness
from exportkit.testing.recording import Call, RecordingSettings, RecordingSink, recording_sink_type
from exportkit.testing.target import folder_state

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
    "folder_state",
]
