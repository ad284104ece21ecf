"""dlq replay: rejected records go to their sink again; accepted ones leave the queue."""

from __future__ import annotations

import json

from exportkit.engine import run_instance
from exportkit.replay import replay_dead_letters
from exportkit.state import State, state_path
from exportkit.testing import make_indicators

from .test_engine import SinkPlugin, setup_instance


def test_replay_moves_accepted_records_out_of_the_queue(tmp_path):
    plugin = SinkPlugin(a={"reject": {"2", "3"}})
    config, registry = setup_instance(tmp_path, make_indicators(4), plugin, sinks=("a",))
    run_instance(config, registry)
    # The cause is fixed for record 2 only.
    plugin.types["a"].factory.kwargs["reject"] = {"3"}
    report = replay_dead_letters(config, registry)
    assert plugin.last("a").written_ids() == ["2", "3"]
    assert report.mode == "replay" and report.sinks["a"]["accepted"] == 1 and report.sinks["a"]["rejected"] == 1
    written = json.loads((tmp_path / "inst.report.json").read_text())  # operations.md: replays write a report too
    assert written["mode"] == "replay" and written["run_id"] == report.run_id
    with State.open(state_path(tmp_path, "inst")) as st:
        letters = st.dead_letters("a")
        assert [(d.source_id, d.attempts) for d in letters] == [("3", 2)]
        assert st.holdings("a").get("2") is not None


def test_replay_with_nothing_queued_sends_nothing(tmp_path):
    plugin = SinkPlugin(a={})
    config, registry = setup_instance(tmp_path, make_indicators(2), plugin, sinks=("a",))
    run_instance(config, registry)
    report = replay_dead_letters(config, registry)
    assert report.exit_code == 0
    assert plugin.last("a").calls == []
