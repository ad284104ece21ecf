"""Plugin discovery and per-instance plugin managers."""

from __future__ import annotations

import sys
import types
from importlib.metadata import EntryPoint

import pluggy
import pytest

from exportkit import plugins
from exportkit.context import SinkType
from exportkit.hookspecs import hookimpl
from exportkit.plugins import PluginRegistry, build_instance_manager, call_each, discover, new_manager, sink_caller
from exportkit.testing import RecordingSink, make_indicators, recording_sink_type


def plugin_module(name: str, returns) -> types.ModuleType:
    module = types.ModuleType(name)

    @hookimpl
    def exportkit_sink_types():
        return returns

    module.exportkit_sink_types = exportkit_sink_types
    return module


@pytest.fixture()
def entry_points(monkeypatch):
    """Make discover() see the given entry points (a fake of one function)."""
    found: list[EntryPoint] = []

    def fake(*, group):
        return [ep for ep in found if ep.group == group]

    monkeypatch.setattr(plugins.metadata, "entry_points", fake)
    return found


def add(found, monkeypatch, name, module):
    monkeypatch.setitem(sys.modules, module.__name__, module)
    found.append(EntryPoint(name, module.__name__, "exportkit"))


def test_broken_entry_point_is_isolated(entry_points, monkeypatch):
    add(entry_points, monkeypatch, "good", plugin_module("fake_good_plugin", [recording_sink_type("good")]))
    entry_points.append(EntryPoint("broken", "fake_module_that_does_not_exist_xyz", "exportkit"))
    entry_points.append(EntryPoint("elsewhere", "fake_good_plugin", "other-group"))
    registry = discover()
    assert [p.name for p in registry.loaded] == ["good"]
    (failed,) = registry.failed
    assert failed.name == "broken" and "ModuleNotFoundError" in failed.error
    assert list(registry.sink_types) == ["good"]
    assert list(registry.unavailable) == ["broken"]
    why = registry.unavailable["broken"]
    assert why.startswith("failed to load: " + failed.error) and "EXPORTKIT_DISABLE_PLUGINS=broken" in why


def test_entry_point_raising_at_import(entry_points, monkeypatch):
    class Exploding(EntryPoint):
        def load(self):
            raise RuntimeError("plugin bug at import")

    entry_points.append(Exploding("boom", "whatever", "exportkit"))
    registry = discover()
    assert registry.loaded == [] and registry.failed[0].error == "RuntimeError: plugin bug at import"


def test_plugin_returning_a_non_sinktype_is_failed(entry_points, monkeypatch):
    add(entry_points, monkeypatch, "odd", plugin_module("fake_odd_plugin", ["not a sink type"]))
    registry = discover()
    assert registry.loaded == []
    assert registry.failed[0].name == "odd" and "not SinkType" in registry.failed[0].error


def test_plugin_with_an_unknown_hook_is_failed(entry_points, monkeypatch):
    module = plugin_module("fake_typo_plugin", [])

    @hookimpl
    def exportkit_sink_type():  # misspelt: matches no spec
        return []

    module.exportkit_sink_type = exportkit_sink_type
    add(entry_points, monkeypatch, "typo", module)
    registry = discover()
    assert registry.loaded == [] and "exportkit_sink_type" in registry.failed[0].error


def test_disabled_entry_points_are_skipped(entry_points, monkeypatch):
    add(entry_points, monkeypatch, "good", plugin_module("fake_good_plugin", [recording_sink_type("good")]))
    assert discover(disabled=["good"]).loaded == []
    monkeypatch.setenv("EXPORTKIT_DISABLE_PLUGINS", " good , other")
    registry = discover()
    assert registry.loaded == [] and registry.failed == []
    assert [d.name for d in registry.disabled] == ["good"]
    assert registry.unavailable["good"].startswith("is disabled by EXPORTKIT_DISABLE_PLUGINS (entry point 'good'")


def test_duplicate_sink_names_are_unavailable(entry_points, monkeypatch):
    add(entry_points, monkeypatch, "one", plugin_module("fake_one", [recording_sink_type("dup"), recording_sink_type("solo")]))
    add(entry_points, monkeypatch, "two", plugin_module("fake_two", [recording_sink_type("dup")]))
    registry = discover()
    assert sorted(registry.sink_types) == ["solo"]
    assert "dup" in registry.unavailable and "several plugins" in registry.unavailable["dup"]
    assert registry.origin("solo").name == "one" and registry.plugin("two") is not None


def test_registry_describes_hooks_and_origin():
    registry = PluginRegistry()
    registry.add("mine", plugin_module("fake_mine", [recording_sink_type("mine")]), distribution="dist-mine", version="1.2")
    (loaded,) = registry.loaded
    assert loaded.hooks == ("exportkit_sink_types",) and loaded.distribution == "dist-mine" and loaded.version == "1.2"
    assert isinstance(registry.sink_types["mine"], SinkType)
    assert registry.origin("nope") is None and registry.plugin("nope") is None


def test_installed_stdout_plugin_is_discovered():
    registry = discover()
    assert "stdout" in registry.sink_types
    assert registry.origin("stdout").distribution == "exportkit-stdout"


def test_build_instance_manager_holds_only_the_given_sinks():
    a, b = RecordingSink(), RecordingSink()
    pm = build_instance_manager({"a": a, "b": b})
    assert sorted(name for name, _ in pm.list_name_plugin()) == ["sink:a", "sink:b"]
    assert pm.is_registered(a) and pm.is_registered(b)


def test_build_instance_manager_refuses_a_hook_without_spec():
    class Typo:
        @hookimpl
        def exportkit_wirte(self, records, context):
            pass

    with pytest.raises(pluggy.PluginValidationError):
        build_instance_manager({"t": Typo()})


def test_sink_caller_reaches_one_sink_only():
    from exportkit.testing import SinkHarness

    a, b = RecordingSink(), RecordingSink()
    pm = build_instance_manager({"a": a, "b": b})
    context = SinkHarness(RecordingSink(), name="a").context
    sink_caller(pm, "exportkit_write", "a")(records=make_indicators(2), context=context)
    assert a.hooks() == ["write"] and b.hooks() == []
    sink_caller(pm, "exportkit_close", "b")(context=context, error=None)
    assert a.hooks() == ["write"] and b.hooks() == ["close"]


def test_sink_caller_keeps_non_sink_wrappers():
    seen = []

    class Wrapper:
        @hookimpl(hookwrapper=True)
        def exportkit_write(self, records, context):
            seen.append(len(records))
            yield

    a, b = RecordingSink(), RecordingSink()
    pm = build_instance_manager({"a": a, "b": b}, {"wrap": Wrapper()})
    from exportkit.testing import SinkHarness

    context = SinkHarness(RecordingSink(), name="b").context
    sink_caller(pm, "exportkit_write", "b")(records=make_indicators(3), context=context)
    assert seen == [3] and b.written_ids() == ["1", "2", "3"] and a.calls == []


def test_call_each_isolates_a_failing_plugin():
    registry = PluginRegistry()

    class Good:
        called = False

        @hookimpl
        def exportkit_run_finished(self, run, report):
            Good.called = True

    class Bad:
        @hookimpl
        def exportkit_run_finished(self, run, report):
            raise ValueError("plugin bug")

    registry.add("bad", Bad())
    registry.add("good", Good())
    errors = []
    call_each(registry, "exportkit_run_finished", lambda plugin, exc: errors.append((plugin.name, str(exc))), run=None, report={})
    assert errors == [("bad", "plugin bug")] and Good.called


def test_new_manager_has_every_spec_and_nothing_registered():
    pm = new_manager()
    assert pm.get_plugins() == set()
    assert hasattr(pm.hook, "exportkit_write") and hasattr(pm.hook, "exportkit_sink_types")
