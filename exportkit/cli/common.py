"""Options and helpers the commands share: instance selection, config loading, output."""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import click

from exportkit.config import InstanceConfig, config_path, list_instances, load_instance, read_toml, validate_instance_name
from exportkit.errors import ExportkitError
from exportkit.plugins import PluginRegistry, discover
from exportkit.records import parse_time
from exportkit.settings import parse_duration
from exportkit.state import state_path
from exportkit.statelocation import state_url
from exportkit.statestore import StateStore
from exportkit.statestore import open_state as open_instance_state

__all__ = ["config_option", "name_option", "resolve_name", "load", "open_state", "has_state", "check_sink_name", "HistoricalWindow", "echo_err"]


def config_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "-c",
        "--config",
        "config_dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=lambda: os.environ.get("EXPORTKIT_CONFIG", "."),
        show_default="current folder, or $EXPORTKIT_CONFIG",
        help="Folder with the instance config files, state and locks.",
    )(func)


def name_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "-n", "--name", "name", default=None, help="Instance name (default: the only instance in the config folder)."
    )(func)


def resolve_name(config_dir: Path, name: str | None) -> str:
    """The instance to use: ``name``, or the only configured one."""
    if name:
        return validate_instance_name(name)
    names = list_instances(config_dir)
    if len(names) == 1:
        return names[0]
    if not names:
        raise click.UsageError(f"no instance is configured in {config_dir}; run 'exportkit configure -n NAME -c {config_dir}'")
    raise click.UsageError(f"several instances in {config_dir} ({', '.join(names)}); choose one with -n")


def open_state(config_dir: Path, name: str) -> StateStore:
    """The state of an instance that exists (a config file or a state database); never creates one for a typo.

    It is opened where the instance keeps it: SQLite beside the config, or PostgreSQL.
    """
    path = state_path(config_dir, name)
    if not path.exists() and not config_path(config_dir, name).exists():
        known = ", ".join(list_instances(config_dir)) or "none"
        raise ExportkitError(f"no instance {name!r} in {config_dir} (instances there: {known})")
    return open_instance_state(config_dir, name)


def has_state(config_dir: Path, name: str) -> bool:
    """True when instance ``name`` may have state to show: a SQLite file, or PostgreSQL configured."""
    return state_path(config_dir, name).exists() or state_url(config_dir, name) is not None


def check_sink_name(config_dir: Path, name: str, st: StateStore, sink: str | None, *, also: tuple[str, ...] = ()) -> None:
    """Refuse (exit 2) a ``--sink`` the instance neither configures nor has state for.

    A typo must not look like success: ``state reset --sink ctai`` would
    otherwise forget nothing and say "forgot".
    """
    if sink is None:
        return
    known = set(also) | set(st.count_holdings()) | set(st.count_dead_letters())
    try:
        export = read_toml(config_path(config_dir, name)).get("export") or {}
        known |= {str(s) for s in export.get("sinks") or () if isinstance(s, str)}
    except ExportkitError:
        pass  # no readable config: what the state knows is all there is
    if sink not in known:
        listed = ", ".join(sorted(known)) or "none"
        raise click.UsageError(f"no sink {sink!r} in instance {name} (its sinks: {listed})")


def load(config_dir: Path, name: str, registry: PluginRegistry | None = None) -> tuple[InstanceConfig, PluginRegistry]:
    """Discover plugins and load + validate the instance config (all problems at once)."""
    registry = registry or discover()
    config = load_instance(
        config_dir, name, registry.sink_types, unavailable_sinks=registry.unavailable, source_types=registry.source_types
    )
    return config, registry


if TYPE_CHECKING:
    _ParamType = click.ParamType[Any, Any]
else:  # click's ParamType is subscriptable at run time only in recent releases
    _ParamType = click.ParamType


class HistoricalWindow(_ParamType):
    """``FROM[..TO]``: dates (``2024-01-31``), ISO timestamps, or ages like ``30d``/``12h`` before now."""

    name = "FROM[..TO]"

    def convert(self, value: Any, param: Any, ctx: Any) -> tuple[datetime, datetime | None]:
        if isinstance(value, tuple):
            return value
        start_text, _, end_text = str(value).partition("..")
        try:
            start = self._point(start_text)
            end = self._point(end_text) if end_text else None
        except ValueError as exc:
            self.fail(f"{value!r}: {exc} (use e.g. 2024-01-01..2024-02-01 or 30d)", param, ctx)
        if end is not None and end <= start:
            self.fail(f"{value!r}: the end must come after the start", param, ctx)
        return start, end

    @staticmethod
    def _point(text: str) -> datetime:
        text = text.strip()
        if not text:
            raise ValueError("missing start")
        if text[-1:].isalpha() and text[:-1].replace(".", "").isdigit():
            return datetime.now(timezone.utc) - parse_duration(text)
        parsed = parse_time(text)
        assert parsed is not None
        return parsed


def echo_err(message: str) -> None:
    click.echo(message, err=True)

