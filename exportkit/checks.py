"""``exportkit check``: reach the source and every sink, check credentials, send nothing."""

from __future__ import annotations

from exportkit.config import InstanceConfig
from exportkit.engine import Engine, RunOptions
from exportkit.errors import ExportkitError
from exportkit.plugins import PluginRegistry
from exportkit.secrets import redact
from exportkit.statestore import open_state
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
    with open_state(config.config_dir, config.name) as state:
        engine = Engine(config, registry, state, RunOptions(dry_run=True))
        engine.prepare()
        results.append(_check_source(config, engine))
        for sink in engine.sinks:
            part = f"sink {sink.name}"
            if sink.down or not sink.open():
                results.append((part, False, [sink.error or "could not be opened"]))
                continue
            try:
                lines = sink.check() or ["opened"]
            except Exception as exc:  # whatever a plugin raises is a failed check, never a traceback
                sink.close(exc)
                results.append((part, False, [_describe(exc)]))
                continue
            sink.close(None)
            if sink.close_error:
                results.append((part, False, [*lines, sink.close_error]))
            else:
                results.append((part, True, lines))
    return results


def _describe(exc: BaseException) -> str:
    message = redact(str(exc))
    if isinstance(exc, ExportkitError):
        return message or type(exc).__name__
    return f"{type(exc).__name__}: {message}".rstrip(": ")


def _check_source(config: InstanceConfig, engine: Engine) -> tuple[str, bool, list[str]]:
    """Open and check the source; any exception (a third-party source's too) is a failed check."""
    try:
        source = config.source_type.factory(config.source, config_dir=config.config_dir, logger=engine.log)
    except Exception as exc:
        return ("source", False, [_describe(exc)])
    try:
        source.open()
        return ("source", True, source.check())
    except Exception as exc:
        return ("source", False, [_describe(exc)])
    finally:
        try:
            source.close()
        except Exception as exc:
            engine.log.warning("source close failed: %s", _describe(exc))
