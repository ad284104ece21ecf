"""Instance configuration files: find, load, validate (every problem at once), write.

One TOML file per instance, ``<config dir>/<instance>.toml``::

    [source]            # source.type picks the table's keys: "threatq" (default) or "file"
    [export]            # sinks, plugins, batch_size, reconcile_every, proxy, overlap
    [sinks.NAME]        # one table per sink named in export.sinks
    [state]             # url: PostgreSQL state for a fleet (default: SQLite beside the config)
    [schedule]          # every or cron: when `exportkit fleet beat` runs the instance

:func:`load_instance` reads and validates the whole file before anything
touches the network: the source table, the export table, and every sink's
table against its declared settings class. All problems are collected into
one :class:`~exportkit.errors.ConfigError`.
"""

from __future__ import annotations

import difflib
import os
import re
import stat
import sys
from datetime import timedelta
from pathlib import Path
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import attrs

from exportkit.context import SinkType
from exportkit.errors import ConfigError
from exportkit.files import check_folder_not_shared, private_folder, write_atomic
from exportkit.fleet.settings import ScheduleSettings, StateSettings
from exportkit.secrets import Secret
from exportkit.settings import ConfigPath, Problem, parse_settings, setting
from exportkit.sources import SourceType
from exportkit.sources import source_types as discovered_source_types

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

__all__ = [
    "ExportSettings",
    "InstanceConfig",
    "config_path",
    "load_instance",
    "parse_instance",
    "list_instances",
    "write_config",
    "dump_toml",
    "validate_instance_name",
]

# fullmatch, never match with "$": "$" also matches before a final newline ("evil\n").
_INSTANCE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_TOP_LEVEL = ("source", "export", "sinks", "state", "schedule")


def _check_proxy(value: str | None) -> str | None:
    if value and not re.match(r"^(https?|socks5h?)://", value):
        return "must be a URL like http://proxy.example.com:3128"
    return None


@attrs.frozen
class ExportSettings:
    """The ``[export]`` table: what this instance sends where, and how."""

    sinks: list[str] = setting(help="The sinks this instance feeds, by name (see `exportkit plugins`).", example='["ctia"]')
    plugins: list[str] = setting(
        [], help="Extra entry-point plugins (filters, notifications) that join this instance's runs."
    )
    batch_size: int = setting(1000, help="Records per batch handed to each sink.", minimum=1, maximum=100_000)
    reconcile_every: timedelta | None = setting(
        timedelta(hours=24),
        help='How often a run also looks for records removed from the collection ("24h"; "0" turns it off).',
    )
    overlap: timedelta = setting(
        timedelta(minutes=5),
        help="How far before the checkpoint each incremental pull starts, to catch late commits.",
    )
    proxy: str | None = setting(
        None, help="Proxy URL for sink traffic, used only when the run is given -ep.", check=_check_proxy
    )
    run_deadline: timedelta = setting(
        timedelta(hours=4),
        help='The longest a run may take ("4h"); then it stops cleanly like on SIGTERM: requests in flight are cut, the report is written, exit 3.',
        check=lambda v: "must be longer than 0" if v <= timedelta(0) else None,
    )
    keep_reports: int = setting(
        50, help="How many per-run reports (<instance>.report.<run_id>.json) to keep in the log folder.", minimum=1, maximum=100_000
    )
    metrics_file: ConfigPath | None = setting(
        None,
        help="Prometheus text file written after each run, for node_exporter's textfile collector "
        "(a *.prom path in its folder; relative to the config folder).",
    )
    verify_sample: int = setting(
        50_000, help="Most held records a reconcile pass asks each sink to verify (and repair) in the target; "
        "all of them when a sink holds fewer, a random sample of this many otherwise; 0 turns verifying off.", minimum=0,
    )


@attrs.frozen
class InstanceConfig:
    """A validated instance configuration.

    :param name: the instance name.
    :param path: the file it came from.
    :param source_type: the source type selected by ``source.type``.
    :param source: the parsed source settings.
    :param export: the parsed ``[export]`` table.
    :param sinks: sink name -> parsed settings, in ``export.sinks`` order.
    :param sink_types: sink name -> sink type name (the same unless the table sets ``type``).
    :param state: the ``[state]`` table (where the state lives).
    :param schedule: the ``[schedule]`` table (when a fleet runs the instance).
    """

    name: str
    path: Path
    source_type: SourceType
    source: Any
    export: ExportSettings
    sinks: dict[str, Any]
    sink_types: dict[str, str] = attrs.field(factory=dict)
    state: StateSettings = attrs.field(factory=StateSettings)
    schedule: ScheduleSettings = attrs.field(factory=ScheduleSettings)
    #: what is allowed but unsafe (TLS checks off, credentials over plain http, a readable secret file);
    #: said on every run and by ``exportkit check``
    warnings: tuple[str, ...] = ()

    def sink_type_of(self, sink: str) -> str:
        """The sink type name of configured sink ``sink``."""
        return self.sink_types.get(sink, sink)

    @property
    def config_dir(self) -> Path:
        """The folder that holds this instance's config, state and lock."""
        return self.path.parent

    def sinks_on_standard_output(self) -> list[str]:
        """The configured sinks that write to standard output.

        A sink says so through an optional ``uses_standard_output()`` method on
        its settings class; the CLI refuses a run where two writers (sinks,
        ``-ll stdout``, ``--json``) would interleave there.
        """
        return [name for name, settings in self.sinks.items() if getattr(settings, "uses_standard_output", lambda: False)()]


def validate_instance_name(name: str) -> str:
    """Return ``name`` if it is a usable instance name (letters, digits, ``._-``), else raise ConfigError."""
    if not _INSTANCE_NAME.fullmatch(name):
        raise ConfigError(
            f"invalid instance name {name!r}: use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return name


def config_path(config_dir: Path, name: str) -> Path:
    """The config file of instance ``name`` in ``config_dir``."""
    return Path(config_dir) / f"{validate_instance_name(name)}.toml"


def list_instances(config_dir: Path) -> list[str]:
    """Names of the instances configured in ``config_dir``, sorted."""
    folder = Path(config_dir)
    if not folder.is_dir():
        return []
    return sorted(p.stem for p in folder.glob("*.toml") if _INSTANCE_NAME.fullmatch(p.stem))


def read_toml(path: Path) -> dict[str, Any]:
    """Read a TOML file; a syntax error becomes a ConfigError naming line and column."""
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{path}: not usable TOML: arrays or tables nested too deeply") from None


def load_instance(
    config_dir: Path,
    name: str,
    sink_types: Mapping[str, SinkType],
    *,
    unavailable_sinks: Mapping[str, str] | None = None,
    environ: Mapping[str, str] | None = None,
    source_types: Mapping[str, SourceType] | None = None,
) -> InstanceConfig:
    """Load and validate instance ``name``.

    :param config_dir: the folder with ``<name>.toml``.
    :param name: the instance name.
    :param sink_types: sink types that loaded, by name.
    :param unavailable_sinks: sink or plugin names that cannot be used -> why, worded to
        follow "sink type 'x'" (``PluginRegistry.unavailable``), so a problem can say why a sink is missing.
    :param environ: environment for ``env:`` secrets (default :data:`os.environ`).
    :param source_types: source types by name (default: those of every installed plugin).
    :raises ConfigError: listing every problem in the file.
    """
    path = config_path(config_dir, name)
    check_folder_not_shared(path.parent, "config folder")
    return parse_instance(
        read_toml(path), path, name, sink_types, unavailable_sinks=unavailable_sinks, environ=environ, check_file_mode=True,
        source_types=source_types,
    )


def parse_instance(
    raw: Mapping[str, Any],
    path: Path,
    name: str,
    sink_types: Mapping[str, SinkType],
    *,
    unavailable_sinks: Mapping[str, str] | None = None,
    environ: Mapping[str, str] | None = None,
    check_file_mode: bool = True,
    source_types: Mapping[str, SourceType] | None = None,
) -> InstanceConfig:
    """Validate config data as if it were the file ``path`` (relative paths resolve from its folder).

    ``configure`` uses this to check a config before it writes anything;
    :func:`load_instance` for the file itself. ``check_file_mode`` is false
    for data not written yet (the file will be created 0600). ``source_types``
    as for :func:`load_instance`.

    :raises ConfigError: listing every problem.
    """
    file = str(path)
    problems: list[Problem] = []
    unavailable = dict(unavailable_sinks or {})

    for key in raw:
        if key not in _TOP_LEVEL:
            close = difflib.get_close_matches(key, _TOP_LEVEL, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            problems.append(Problem(file, key, f"unknown table{hint}", ", ".join(_TOP_LEVEL)))

    source_raw = _table(raw, "source", file, problems)
    types = dict(source_types) if source_types is not None else discovered_source_types()
    type_name = source_raw.get("type", "threatq")
    source_type = types.get(type_name) if isinstance(type_name, str) else None
    source_settings = None
    if source_type is None:
        problems.append(Problem(file, "source.type", f"unknown source type {type_name!r}", ", ".join(sorted(types))))
    else:
        source_settings, found = parse_settings(
            source_type.settings_class, source_raw, file=file, section="source", environ=environ, base_dir=path.parent
        )
        problems += found

    export_raw = _table(raw, "export", file, problems)
    export, found = parse_settings(ExportSettings, export_raw, file=file, section="export", environ=environ, base_dir=path.parent)
    problems += found

    sinks_raw = _table(raw, "sinks", file, problems)
    sinks: dict[str, Any] = {}
    # Validate the sink tables even when another [export] key is wrong, so that
    # every problem is reported in one go.
    raw_sinks = export_raw.get("sinks")
    fallback = raw_sinks if isinstance(raw_sinks, list) and all(isinstance(x, str) for x in raw_sinks) else []
    selected = list(export.sinks) if export else fallback
    if export is not None and not selected:
        problems.append(Problem(file, "export.sinks", "names no sink", ", ".join(sorted(sink_types)) or "none installed"))
    sink_type_names: dict[str, str] = {}
    for sink_name in selected:
        table = sinks_raw.get(sink_name, {})
        if not isinstance(table, dict):
            problems.append(Problem(file, f"sinks.{sink_name}", "must be a table"))
            continue
        # A sink is named by its type unless its table says `type = "..."`, which lets
        # one instance feed two sinks of the same type (two files, two CTIA orgs).
        table = dict(table)
        type_name = table.pop("type", sink_name)
        sink_type = sink_types.get(type_name) if isinstance(type_name, str) else None
        if sink_type is None:
            where = f"sinks.{sink_name}.type" if type_name != sink_name else "export.sinks"
            if type_name in unavailable:
                problems.append(Problem(file, where, f"sink type {type_name!r} {unavailable[type_name]}"))
            else:
                message = f"no installed plugin provides sink type {type_name!r}"
                failed = [name for name in unavailable if name not in sink_types]
                if failed:  # it may be a plugin that failed or is disabled under another name
                    message += f"; plugins that failed to load or are disabled: {', '.join(failed)} (see 'exportkit plugins')"
                problems.append(Problem(file, where, message, ", ".join(sorted(sink_types)) or "none installed"))
            continue
        parsed, found = parse_settings(
            sink_type.settings_class, table, file=file, section=f"sinks.{sink_name}", environ=environ, base_dir=path.parent
        )
        problems += found
        sinks[sink_name] = parsed
        sink_type_names[sink_name] = type_name

    state, found = parse_settings(StateSettings, _table(raw, "state", file, problems), file=file, section="state", environ=environ, base_dir=path.parent)
    problems += found
    schedule, found = parse_settings(
        ScheduleSettings, _table(raw, "schedule", file, problems), file=file, section="schedule", environ=environ, base_dir=path.parent
    )
    problems += found

    # Tables for sinks not in export.sinks are allowed: a sink can be switched off for a while.
    all_settings = [source_settings, export, *sinks.values(), state]
    if check_file_mode:
        problems += _permission_problems(path, all_settings)
    if problems:
        raise ConfigError(f"{path}: configuration is not valid", problems)
    assert source_type is not None and export is not None and state is not None and schedule is not None
    sections = [("source", source_settings), *((f"sinks.{n}", s) for n, s in sinks.items())]
    return InstanceConfig(
        name=name, path=path, source_type=source_type, source=source_settings, export=export, sinks=sinks, sink_types=sink_type_names,
        state=state, schedule=schedule,
        warnings=tuple(w for section, settings in sections for w in security_warnings(section, settings)),
    )


def _table(raw: Mapping[str, Any], key: str, file: str, problems: list[Problem]) -> dict[str, Any]:
    value = raw.get(key, {})
    if not isinstance(value, dict):
        problems.append(Problem(file, key, "must be a table ([%s])" % key))
        return {}
    return value


def _literal_secrets(settings: Any) -> list[str]:
    if settings is None or not attrs.has(type(settings)):
        return []
    return [f.name for f in attrs.fields(type(settings)) if isinstance(getattr(settings, f.name), Secret) and getattr(settings, f.name).source == "literal"]


#: setting names whose value is an endpoint that credentials are sent to
_ENDPOINT_KEYS = ("host", "url", "api_url", "token_url")
_LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")


def security_warnings(section: str, settings: Any) -> list[str]:
    """What ``settings`` allows that weakens security: ``verify_tls = false``, an ``http://`` endpoint
    (other than loopback), a ``file:`` secret that every user can read."""
    if settings is None or not attrs.has(type(settings)):
        return []
    out = []
    for field in attrs.fields(type(settings)):
        value = getattr(settings, field.name)
        key = f"{section}.{field.name}"
        if field.name == "verify_tls" and value is False:
            out.append(f"{key} = false: the server's certificate is not checked, so anyone on the path can pose as it and read the credentials; set ca_bundle instead")
        elif field.name in _ENDPOINT_KEYS and isinstance(value, str) and value.lower().startswith("http://"):
            host = (urlsplit(value).hostname or "").lower()
            if host not in _LOOPBACK:
                out.append(f"{key} is a plain http:// URL: credentials and data cross the network unencrypted; use https://")
        elif isinstance(value, Secret) and value.source.startswith("file:"):
            secret_file = Path(value.source[5:])
            try:
                readable = bool(secret_file.stat().st_mode & stat.S_IROTH)
            except OSError:
                readable = False
            if readable:
                out.append(f"{key}: the secret file {secret_file} is readable by others; run 'chmod 600 {secret_file}'")
    return out


def _permission_problems(path: Path, settings_objects: list[Any]) -> list[Problem]:
    if os.name != "posix":
        return []
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & stat.S_IWOTH:
        # Anyone could point the secrets elsewhere (env:, file:), the URLs at their own server
        # or the template at a command, whatever the file holds today.
        return [Problem(str(path), "(file)", f"is writable by others (mode {mode:o}); run 'chmod 600 {path}'")]
    literal = [name for s in settings_objects for name in _literal_secrets(s)]
    if not literal:
        return []
    if mode & 0o077:
        return [
            Problem(
                str(path),
                ", ".join(literal),
                f"holds a literal secret but the file is readable by others (mode {mode:o}); "
                f"run 'chmod 600 {path}' or use env:NAME / file:PATH",
            )
        ]
    return []


# --- Writing ---------------------------------------------------------------------


def dump_toml(data: Mapping[str, Any]) -> str:
    """Write nested tables of strings, numbers, booleans and string lists as TOML.

    Enough for instance configs; keeps key order so files read as they were written.
    """
    lines: list[str] = []

    def scalar(value: Any) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, (int, float)):
            return repr(value)
        if isinstance(value, (list, tuple)):
            return "[" + ", ".join(scalar(v) for v in value) + "]"
        if isinstance(value, timedelta):
            return scalar(f"{int(value.total_seconds())}s")
        return '"' + "".join(_ESCAPES.get(ch) or (f"\\u{ord(ch):04x}" if _is_control(ch) else ch) for ch in str(value)) + '"'

    def table(prefix: str, body: Mapping[str, Any]) -> None:
        plain = {k: v for k, v in body.items() if not isinstance(v, Mapping)}
        nested = {k: v for k, v in body.items() if isinstance(v, Mapping)}
        if prefix and (plain or not nested):
            lines.append(f"[{prefix}]")
        for key, value in plain.items():
            if value is not None:
                lines.append(f"{_key(key)} = {scalar(value)}")
        if plain:
            lines.append("")
        for key, value in nested.items():
            table(f"{prefix}.{_key(key)}" if prefix else _key(key), value)

    table("", data)
    return "\n".join(lines).rstrip() + "\n"


_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r"}


def _is_control(ch: str) -> bool:
    # TOML basic strings may not hold control characters other than tab; escape them.
    return ord(ch) < 0x20 or ord(ch) == 0x7F


def _key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else '"' + key.replace('"', '\\"') + '"'


def write_config(path: Path, data: Mapping[str, Any]) -> Path:
    """Write ``data`` as TOML to ``path`` with mode 0600, atomically (never a half-written file)."""
    path = Path(path)
    text = dump_toml(data)  # before touching the disk: a value that cannot be written leaves nothing behind
    private_folder(path.parent, "config folder")
    return write_atomic(path, text.encode("utf-8"), what="the config file")
