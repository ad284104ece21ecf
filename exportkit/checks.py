"""``exportkit check``: reach the source and every sink, check credentials, send nothing."""

from __future__ import annotations

from exportkit.config import InstanceConfig
from exportkit.engine import Engine, RunOptions
from exportkit.errors import ExportkitError
from exportkit.plugins import PluginRegistry
from exportkit.secrets import redact
from exportkit.state import State, state_path
from exportkit.transport import probing

__all__ = ["check_instance"]


def check_instance(config: InstanceConfig, registry: PluginRegistry) -> list[tuple[str, bool, list[str]]]:
    """Check the source and each sink for ``exportkit check``: ``(part, ok, lines)`` per part.

    Sends nothing and writes no state (sinks get a dry-run context). Every
    request is a quick probe (:func:`exportkit.transport.probing`): one attempt,
    short timeouts, so a check answers within seconds when nothing answers.
    """
    with probing():
        return _check_instance(config, registry)


def _check_instance(config: InstanceConfig, registry: PluginRegistry) -> list[tuple[str, bool, list[str]]]:
    results: list[tuple[str, bool, list[str]]] = []
    with State.open(state_path(config.config_dir, config.name)) as state:
        engine = Engine(config, registry, state, RunOptions(dry_run=True))
        engine._build_sinks()
        source = config.source_type.factory(config.source, config_dir=config.config_dir, logger=engine.log)
        try:
            source.open()
            results.append(("source", True, source.check()))
        except ExportkitError as exc:
            results.append(("source", False, [redact(str(exc))]))
        finally:
            source.close()
        for sink in engine.sinks:
            part = f"sink {sink.name}"
            if sink.down or not sink.open():
                results.append((part, False, [sink.error or "could not be opened"]))
                continue
            try:
                results.append((part, True, sink.check() or ["opened"]))
            except Exception as exc:
                results.append((part, False, [redact(str(exc)) or type(exc).__name__]))
            finally:
                sink.close(None)
    return results
