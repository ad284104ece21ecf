"""Source types are plugins: found through entry points like sinks, the built-in ones included."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator

import attrs

from exportkit import hookimpl, setting
from exportkit.config import load_instance, write_config
from exportkit.engine import run_instance
from exportkit.plugins import PluginRegistry, discover
from exportkit.sources import PullItem, SourceType, source_types
from exportkit.testing import make_indicators, recording_sink_type


def test_threatq_and_file_are_entry_points_of_the_core_distribution():
    registry = discover()
    for name in ("threatq", "file"):
        plugin = registry.plugin(name)
        assert plugin is not None and plugin.distribution == "exportkit-core"
        assert [st.name for st in plugin.source_types] == [name]
        assert registry.source_types[name] is plugin.source_types[0]
    assert set(source_types()) >= {"threatq", "file"}


@attrs.frozen
class CountingSettings:
    type: str = setting("counting", help="The source type.", choices=("counting",))
    count: int = setting(3, help="How many records.")


class CountingSource:
    name = "counting"
    total: int | None = None

    def __init__(self, settings: CountingSettings, *, config_dir: Path, logger: Any = None) -> None:
        self.records = make_indicators(settings.count)

    def open(self) -> None:
        pass

    def pull(self, since: datetime | None, until: datetime | None) -> Iterator[PullItem]:
        yield from self.records

    def current_ids(self) -> Iterator[str]:
        yield from (r.source_id for r in self.records)

    def check(self) -> list[str]:
        return ["counting"]

    def close(self) -> None:
        pass


class CountingPlugin:
    sink = recording_sink_type("rec")

    @hookimpl
    def exportkit_source_types(self):
        return [SourceType("counting", CountingSettings, CountingSource)]

    @hookimpl
    def exportkit_sink_types(self):
        return [self.sink]


def test_a_third_party_source_type_runs_like_a_built_in_one(tmp_path):
    registry = PluginRegistry()
    plugin = CountingPlugin()
    registry.add("counting", plugin)
    write_config(tmp_path / "inst.toml", {
        "source": {"type": "counting", "count": 4},
        "export": {"sinks": ["rec"]},
        "sinks": {"rec": {}},
    })
    config = load_instance(tmp_path, "inst", registry.sink_types, unavailable_sinks=registry.unavailable, source_types=registry.source_types)
    report = run_instance(config, registry)
    assert report.exit_code == 0 and report.sinks["rec"]["accepted"] == 4
    assert json.loads(report.path.read_text())["pulled"] == 4


def test_a_source_name_offered_twice_is_usable_from_neither():
    registry = PluginRegistry()
    registry.add("one", CountingPlugin())
    registry.add("two", CountingPlugin())
    assert "counting" not in registry.source_types


class BrokenSource(CountingSource):
    def open(self) -> None:
        raise ValueError("vendor SDK not configured")


def test_check_reports_a_source_that_raises_anything_as_failed(tmp_path):
    from exportkit.checks import check_instance

    registry = PluginRegistry()

    class Plugin(CountingPlugin):
        @hookimpl
        def exportkit_source_types(self):
            return [SourceType("counting", CountingSettings, BrokenSource)]

    registry.add("counting", Plugin())
    write_config(tmp_path / "inst.toml", {"source": {"type": "counting"}, "export": {"sinks": ["rec"]}, "sinks": {"rec": {}}})
    config = load_instance(tmp_path, "inst", registry.sink_types, unavailable_sinks=registry.unavailable, source_types=registry.source_types)
    results = dict((part, (ok, lines)) for part, ok, lines in check_instance(config, registry))
    assert results["source"] == (False, ["ValueError: vendor SDK not configured"])
    assert results["sink rec"][0] is True
