"""Plugin discovery (entry points, one at a time) and the per-instance plugin manager.

Nothing happens at import. :func:`discover` loads each entry point of the
``exportkit`` group in its own ``try``, so a broken plugin is recorded (name,
distribution, error) and fails only the instances that use its sinks.
:func:`build_instance_manager` then makes a fresh :class:`pluggy.PluginManager`
per run holding only that instance's sink objects and the extra plugins it
names, so hooks reach nothing else.

Environment:

* ``EXPORTKIT_DISABLE_PLUGINS=a,b`` skips entry points by name.
* ``EXPORTKIT_TRACE_HOOKS=1`` logs every hook call of instance runs at debug level.
"""

from __future__ import annotations

import importlib.metadata as metadata
import logging
import os
from typing import Any, Callable, Iterable, Mapping

import attrs
import pluggy

from exportkit import hookspecs
from exportkit.context import SinkType
from exportkit.hookspecs import NAME
from exportkit.sources import SourceType

__all__ = ["LoadedPlugin", "FailedPlugin", "DisabledPlugin", "listing", "PluginRegistry", "discover", "build_instance_manager", "new_manager", "sink_hooks", "validate_plugin"]

log = logging.getLogger("exportkit.plugins")


@attrs.frozen
class LoadedPlugin:
    """An entry point that loaded.

    :param name: the entry point name.
    :param distribution: the distribution that declares it (``None`` for objects registered by hand).
    :param version: that distribution's version.
    :param obj: the loaded module or object.
    :param sink_types: the sinks it provides.
    :param hooks: names of the hooks it implements.
    :param source_types: the sources it provides.
    :param invalid: sink type name -> why its sink objects cannot join a run (a hook
        that matches no spec, a wrong signature). Such a sink is reported by
        name and fails alone, in the runs that use it.
    """

    name: str
    distribution: str | None
    version: str | None
    obj: Any
    sink_types: tuple[SinkType, ...]
    hooks: tuple[str, ...]
    invalid: Mapping[str, str] = attrs.field(factory=dict)
    source_types: tuple[SourceType, ...] = ()


@attrs.frozen
class FailedPlugin:
    """An entry point that failed to load or to describe itself; ``error`` says why."""

    name: str
    distribution: str | None
    version: str | None
    error: str


@attrs.frozen
class DisabledPlugin:
    """An entry point left out on purpose, because ``EXPORTKIT_DISABLE_PLUGINS`` names it."""

    name: str
    distribution: str | None
    version: str | None


@attrs.define
class PluginRegistry:
    """What discovery found: loaded plugins, failures, disabled ones, and every sink type by name."""

    loaded: list[LoadedPlugin] = attrs.field(factory=list)
    failed: list[FailedPlugin] = attrs.field(factory=list)
    disabled: list[DisabledPlugin] = attrs.field(factory=list)

    @property
    def sink_types(self) -> dict[str, SinkType]:
        """Sink types by name; a name two plugins offer is left out (see :attr:`unavailable`)."""
        counts: dict[str, int] = {}
        for plugin in self.loaded:
            for st in plugin.sink_types:
                counts[st.name] = counts.get(st.name, 0) + 1
        return {st.name: st for p in self.loaded for st in p.sink_types if counts[st.name] == 1}

    @property
    def unavailable(self) -> dict[str, str]:
        """Names (entry point or sink) that cannot be used -> why, for config problems.

        Each reason reads on from the name: ``sink type 'acme' <reason>``. A
        disabled or failed entry point is listed by its name, which by
        convention is the name of the sink type it provides.
        """
        out = {
            d.name: f"is disabled by EXPORTKIT_DISABLE_PLUGINS (entry point {d.name!r} of {_origin(d.distribution, d.version)}); "
            "remove it from that variable to use it"
            for d in self.disabled
        }
        out.update({
            f.name: f"failed to load: {f.error} (entry point {f.name!r} of {_origin(f.distribution, f.version)}); "
            f"fix or uninstall it, or skip it with EXPORTKIT_DISABLE_PLUGINS={f.name}"
            for f in self.failed
        })
        owners: dict[str, list[str]] = {}
        for plugin in self.loaded:
            for st in plugin.sink_types:
                owners.setdefault(st.name, []).append(plugin.distribution or plugin.name)
        for sink, names in owners.items():
            if len(names) > 1:
                out[sink] = f"is offered by several plugins ({', '.join(names)}); uninstall or disable one"
        return out

    @property
    def source_types(self) -> dict[str, SourceType]:
        """Source types by name (``source.type``); a name two plugins offer is left out."""
        counts: dict[str, int] = {}
        for plugin in self.loaded:
            for st in plugin.source_types:
                counts[st.name] = counts.get(st.name, 0) + 1
        return {st.name: st for p in self.loaded for st in p.source_types if counts[st.name] == 1}

    def plugin(self, name: str) -> LoadedPlugin | None:
        """The loaded plugin whose entry point is ``name``."""
        return next((p for p in self.loaded if p.name == name), None)

    def origin(self, sink: str) -> LoadedPlugin | None:
        """The plugin that provides sink type ``sink``."""
        return next((p for p in self.loaded if any(st.name == sink for st in p.sink_types)), None)

    def add(self, name: str, obj: Any, *, distribution: str | None = None, version: str | None = None) -> None:
        """Register a plugin object by hand (tests, embedding) as if an entry point had loaded it."""
        self._describe(name, obj, distribution, version)

    def _describe(self, name: str, obj: Any, distribution: str | None, version: str | None) -> None:
        pm = new_manager()
        try:
            pm.register(obj, name=name)
            pm.check_pending()
            found = pm.hook.exportkit_sink_types()
            types = tuple(st for result in found for st in (result or ()))
            for st in types:
                if not isinstance(st, SinkType):
                    raise TypeError(f"exportkit_sink_types returned {type(st).__name__}, not SinkType")
            sources = tuple(st for result in pm.hook.exportkit_source_types() for st in (result or ()))
            for source in sources:
                if not isinstance(source, SourceType):
                    raise TypeError(f"exportkit_source_types returned {type(source).__name__}, not SourceType")
        except Exception as exc:  # any failure is this plugin's, never the host's
            self.failed.append(FailedPlugin(name, distribution, version, f"{type(exc).__name__}: {exc}"))
            log.warning("plugin %s failed to load: %s: %s", name, type(exc).__name__, exc)
            return
        hooks = tuple(sorted(h.name for h in pm.get_hookcallers(obj) or ()))
        invalid = {}
        for st in types:
            if isinstance(st.factory, type) and (problem := validate_plugin(st.factory, st.factory.__qualname__)) is not None:
                invalid[st.name] = problem
                log.warning("sink %s of plugin %s is invalid: %s", st.name, name, problem)
        self.loaded.append(LoadedPlugin(name, distribution, version, obj, types, hooks, invalid, sources))

    def invalid_sink(self, sink: str) -> str | None:
        """Why sink type ``sink`` fails hook validation (with its plugin's name), or ``None``."""
        plugin = self.origin(sink)
        if plugin is None or sink not in plugin.invalid:
            return None
        return f"plugin {plugin.name} ({plugin.distribution or 'unknown distribution'}): {plugin.invalid[sink]}"


def _origin(distribution: str | None, version: str | None) -> str:
    return f"{distribution or 'an unknown distribution'} {version or ''}".rstrip()


def sink_hooks(sink_type: SinkType) -> tuple[str, ...]:
    """The data-path hooks a sink type's objects implement, when its factory is a class (for listings)."""
    factory = sink_type.factory
    if not isinstance(factory, type):
        return ()
    marker = f"{NAME}_impl"  # the attribute pluggy's HookimplMarker sets on implementations
    return tuple(sorted(name for name in dir(factory) if hasattr(getattr(factory, name, None), marker)))


def validate_plugin(obj: object, name: str | None = None) -> str | None:
    """Check ``obj``'s ``@hookimpl`` functions against the hook specs; ``None`` when valid.

    Works for a sink object and for its class (pluggy skips ``self``). Finds a
    hook name that matches no spec (``exportkit_wirte``) and an argument a spec
    does not offer, without calling anything.

    :returns: what is wrong, in one line, or ``None``.
    """
    pm = new_manager()
    label = name or getattr(obj, "__qualname__", None) or type(obj).__qualname__
    try:
        pm.register(obj, name=label)
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        return str(exc).replace("\n", " ").strip()
    except Exception as exc:  # a plugin object so odd pluggy cannot even look at it
        return f"{type(exc).__name__}: {exc}"
    return None


def new_manager() -> pluggy.PluginManager:
    """A plugin manager with exportkit's hook specs and nothing registered."""
    pm = pluggy.PluginManager(NAME)
    pm.add_hookspecs(hookspecs)
    return pm


def discover(group: str = NAME, *, disabled: Iterable[str] | None = None) -> PluginRegistry:
    """Load every entry point of ``group``, each on its own, and describe what it provides.

    :param group: the entry-point group.
    :param disabled: entry point names to skip (default: ``EXPORTKIT_DISABLE_PLUGINS``);
        they are listed in :attr:`PluginRegistry.disabled`, never loaded.
    """
    if disabled is None:
        disabled = [n.strip() for n in os.environ.get("EXPORTKIT_DISABLE_PLUGINS", "").split(",") if n.strip()]
    skip = set(disabled)
    registry = PluginRegistry()
    seen: set[tuple[str, str]] = set()
    for ep in sorted(metadata.entry_points(group=group), key=lambda e: e.name):
        if (ep.name, ep.value) in seen:
            continue  # the same distribution found twice on the path (an editable install beside its egg-info)
        seen.add((ep.name, ep.value))
        dist = getattr(ep, "dist", None)
        dist_name = dist.metadata["Name"] if dist is not None else None
        version = dist.version if dist is not None else None
        if ep.name in skip:
            registry.disabled.append(DisabledPlugin(ep.name, dist_name, version))
            continue
        try:
            obj = ep.load()
        except Exception as exc:  # ImportError, SyntaxError, anything the plugin raises at import
            registry.failed.append(FailedPlugin(ep.name, dist_name, version, f"{type(exc).__name__}: {exc}"))
            log.warning("plugin %s (%s) failed to load: %s: %s", ep.name, dist_name, type(exc).__name__, exc)
            continue
        registry._describe(ep.name, obj, dist_name, version)
    return registry


def listing(registry: PluginRegistry) -> list[str]:
    """The lines ``exportkit plugins`` prints: each plugin with its sinks and hooks, then failed and disabled ones.

    The samples in the docs are checked against this (``tests/test_doc_samples.py``).
    """
    lines: list[str] = []
    for plugin in registry.loaded:
        provides = f"sinks: {', '.join(s.name for s in plugin.sink_types) or '(no sinks)'}"
        if plugin.source_types:
            provides = f"sources: {', '.join(s.name for s in plugin.source_types)}" + (f"  {provides}" if plugin.sink_types else "")
        lines.append(f"{plugin.name}  {plugin.distribution or '-'} {plugin.version or ''}  {provides}")
        lines.append(f"    plugin hooks: {', '.join(plugin.hooks)}")
        for sink_type in plugin.sink_types:
            lines.append(f"    sink {sink_type.name}: {sink_type.description or '(no description)'}")
            hooks = sink_hooks(sink_type)
            if hooks:
                lines.append(f"      hooks: {', '.join(hooks)}")
            if sink_type.name in plugin.invalid:
                lines.append(f"      INVALID: {plugin.invalid[sink_type.name]}; fix the plugin's hooks (see exportkit/hookspecs.py)")
    for failed in registry.failed:
        lines.append(f"{failed.name}  {failed.distribution or '-'} {failed.version or ''}  FAILED TO LOAD: {failed.error}")
        lines.append("    fix or uninstall that distribution, or skip it with EXPORTKIT_DISABLE_PLUGINS=" + failed.name)
    for disabled in registry.disabled:
        lines.append(f"{disabled.name}  {disabled.distribution or '-'} {disabled.version or ''}  disabled by EXPORTKIT_DISABLE_PLUGINS")
    listed = {f.name for f in registry.failed} | {d.name for d in registry.disabled}
    for name, why in registry.unavailable.items():
        if name not in listed:
            lines.append(f"sink {name}: unusable: {why}")
    if not registry.loaded and not registry.failed and not registry.disabled:
        lines.append(
            "no plugins installed: install the sinks from a source tree "
            "(pip install ./plugins/stdout ./plugins/ctia) or from their wheels "
            "(pip install exportkit_ctia-*.whl); they are not published on the package index"
        )
    return lines


def call_each(registry: PluginRegistry, hook: str, on_error: Callable[[LoadedPlugin, BaseException], None], **kwargs: Any) -> None:
    """Call ``hook`` on every loaded plugin separately; a failing plugin is reported to ``on_error``."""
    for plugin in registry.loaded:
        if hook not in plugin.hooks:
            continue
        pm = new_manager()
        pm.register(plugin.obj, name=plugin.name)
        try:
            getattr(pm.hook, hook)(**kwargs)
        except Exception as exc:
            on_error(plugin, exc)


def build_instance_manager(
    sinks: Mapping[str, object],
    extra_plugins: Mapping[str, object] = {},
    *,
    logger: logging.Logger | logging.LoggerAdapter[Any] | None = None,
) -> pluggy.PluginManager:
    """A fresh manager for one run: the instance's sink objects and its extra plugins, nothing else.

    :param sinks: configured sink name -> sink object (registered as ``sink:<name>``).
    :param extra_plugins: entry point name -> plugin object (from ``export.plugins``).
    :raises pluggy.PluginValidationError: a sink object has a hook that matches no spec.
    """
    pm = new_manager()
    for name, obj in sinks.items():
        pm.register(obj, name=f"sink:{name}")
    for name, obj in extra_plugins.items():
        pm.register(obj, name=name)
    pm.check_pending()
    if os.environ.get("EXPORTKIT_TRACE_HOOKS") == "1":
        trace = logger or log
        pm.add_hookcall_monitoring(
            lambda hook_name, impls, kwargs: trace.debug("hook %s -> %s", hook_name, [i.plugin_name for i in impls]),
            lambda outcome, hook_name, impls, kwargs: None,
        )
    return pm


def sink_caller(pm: pluggy.PluginManager, hook: str, sink: str) -> Any:
    """A caller for ``hook`` that reaches only sink ``sink`` (plus non-sink wrappers)."""
    others = [obj for name, obj in pm.list_name_plugin() if name.startswith("sink:") and name != f"sink:{sink}"]
    return pm.subset_hook_caller(hook, remove_plugins=others)
