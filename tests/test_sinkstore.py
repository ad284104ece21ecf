"""A sink's store writes commit with the batch they belong to (durable ones at once), in a real run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import attrs

from exportkit import SinkType, hookimpl
from exportkit.config import load_instance, write_config
from exportkit.engine import run_instance
from exportkit.plugins import PluginRegistry
from exportkit.state import State, state_path
from exportkit.testing import make_indicators


@attrs.frozen
class NoSettings:
    pass


class Noting:
    """Stores the last id of each batch, and looks at what another reader of the state sees meanwhile."""

    folder: Path
    seen: list[tuple[Any, Any]] = []

    def __init__(self, settings: Any) -> None:
        pass

    def _committed(self, key: str) -> Any:
        with State.open(state_path(Noting.folder, "inst")) as other:
            return other.store("note").get(key)

    @hookimpl
    def exportkit_open(self, context):
        context.store.set("opened", True)

    @hookimpl
    def exportkit_write(self, records, context):
        context.store.set("last", records[-1].source_id)
        context.store.set_durable("intent", records[-1].source_id)
        Noting.seen.append((self._committed("last"), self._committed("intent")))


class Plugin:
    @hookimpl
    def exportkit_sink_types(self):
        return [SinkType("note", NoSettings, Noting)]


def setup(folder: Path, count: int):
    with open(folder / "records.jsonl", "w") as fh:
        for record in make_indicators(count):
            fh.write(json.dumps(record.to_dict()) + "\n")
    write_config(folder / "inst.toml", {
        "source": {"type": "file", "path": "records.jsonl"},
        "export": {"sinks": ["note"], "batch_size": 10},
        "sinks": {"note": {}},
    })
    registry = PluginRegistry()
    registry.add("plugin", Plugin())
    Noting.folder = folder
    Noting.seen = []
    return load_instance(folder, "inst", registry.sink_types, unavailable_sinks=registry.unavailable), registry


def test_store_writes_commit_with_their_batch_and_durable_ones_at_once(tmp_path):
    config, registry = setup(tmp_path, 25)
    assert run_instance(config, registry).exit_code == 0
    # While batch N runs, the state holds batch N-1's note, but already this batch's intent.
    assert Noting.seen == [(None, "10"), ("10", "20"), ("20", "25")]
    with State.open(state_path(tmp_path, "inst")) as state:
        assert state.store("note").get("last") == "25" and state.store("note").get("opened") is True


def test_what_a_sink_stores_without_a_batch_is_saved_at_the_end_of_the_run(tmp_path):
    config, registry = setup(tmp_path, 0)
    assert run_instance(config, registry).exit_code == 0
    with State.open(state_path(tmp_path, "inst")) as state:
        assert state.store("note").get("opened") is True
