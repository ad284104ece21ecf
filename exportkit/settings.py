"""Declared settings: one attrs class per config table, parsed with every problem reported.

A settings class is a frozen attrs class whose fields are made with
:func:`setting`. :func:`parse_settings` turns a raw TOML table into an
instance, or into a list of :class:`Problem` naming file, key, what is wrong
and what is allowed. The same declarations generate the configuration
reference in ``docs/`` (:func:`describe`), so code and docs cannot drift.

Example::

    @attrs.frozen
    class StdoutSettings:
        format: str = setting("jsonl", help="Output format.", choices=("jsonl", "csv", "text"))
        path: str = setting("-", help='Where to write; "-" is standard output.')

Supported field types: ``str``, ``int``, ``float``, ``bool``, ``list[str]``, :class:`ConfigPath`,
:class:`~exportkit.secrets.Secret`, :class:`datetime.timedelta` (``"24h"``,
``"30m"``, ``"7d"``, ``"90s"`` or seconds), each optionally ``| None``.
A class may define ``check(self) -> Iterable[tuple[str, str]]`` yielding
``(key, message)`` for rules that span several fields.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence, TypeVar

import attrs

from exportkit.crosscheck import cross_problems, stand_in
from exportkit.secrets import Secret, SecretReferenceError, resolve

__all__ = ["setting", "setting_info", "ConfigPath", "Problem", "SettingInfo", "parse_settings", "describe", "parse_duration", "http_url", "normalise_choice", "REQUIRED", "format_number"]

T = TypeVar("T")
REQUIRED: Any = attrs.NOTHING
_META_KEY = "exportkit.setting"


class ConfigPath(str):
    """A file path setting: ``~`` expanded, and a relative path taken from the config folder.

    cron starts jobs in the home folder, so a path relative to the working
    directory would point somewhere else under cron than by hand.
    """


@attrs.frozen
class SettingInfo:
    """What :func:`setting` records about one key (used for parsing and for docs)."""

    help: str
    choices: tuple[Any, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None
    example: str | None = None
    #: a callable ``value -> message or None`` for rules a type cannot express
    check: Callable[[Any], str | None] | None = None
    #: ask for it in interactive set-up even though it has a default
    prompt: bool = False


def setting_info(field: attrs.Attribute[Any]) -> SettingInfo | None:
    """What :func:`setting` declared for an attrs field (help, choices, limits...), or ``None`` for a plain field.

    The public way to read a settings class's declarations, for example in an
    attrs ``field_transformer``: ``setting_info(field).choices``.
    """
    info = field.metadata.get(_META_KEY)
    return info if isinstance(info, SettingInfo) else None


def setting(
    default: Any = REQUIRED,
    *,
    help: str,
    choices: Sequence[Any] | None = None,
    minimum: float | None = None,
    maximum: float | None = None,
    example: str | None = None,
    check: Callable[[Any], str | None] | None = None,
    prompt: bool = False,
) -> Any:
    """Declare one config key as an attrs field.

    :param default: the value when the key is absent; leave it out for a required key.
        A list default is copied for each instance.
    :param help: one sentence for users; it goes into the generated reference.
    :param choices: the allowed values, checked after conversion.
    :param minimum: lowest allowed number (inclusive).
    :param maximum: highest allowed number (inclusive).
    :param example: an example value for the docs (and prompts) when there is no default.
    :param check: extra rule, returns a message when the value is wrong.
    :param prompt: ask for it in interactive set-up (``configure`` on a terminal)
        although it has a default; required keys are always asked. An empty
        answer keeps the default.
    """
    info = SettingInfo(
        help=help,
        choices=tuple(choices) if choices is not None else None,
        minimum=minimum,
        maximum=maximum,
        example=example,
        check=check,
        prompt=prompt,
    )
    if isinstance(default, list):
        frozen_default = tuple(default)
        return attrs.field(factory=lambda: list(frozen_default), metadata={_META_KEY: info}, kw_only=True)
    return attrs.field(default=default, metadata={_META_KEY: info}, kw_only=True)


@attrs.frozen
class Problem:
    """One configuration problem.

    :param file: the file (or other origin) the setting came from.
    :param key: dotted key, e.g. ``sinks.ctia.priority``.
    :param message: what is wrong.
    :param allowed: what would be accepted, if it can be said briefly.
    """

    file: str
    key: str
    message: str
    allowed: str = ""

    def __str__(self) -> str:
        text = f"{self.file}: {self.key}: {self.message}"
        if self.allowed:
            text += f" (allowed: {self.allowed})"
        return text


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|secs|seconds?|m|min|mins|minutes?|h|hours?|d|days?|w|weeks?)?\s*$", re.I)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(value: Any) -> timedelta:
    """Parse ``"90s"``, ``"30m"``, ``"24h"``, ``"7d"``, ``"2w"`` or a number of seconds.

    :raises ValueError: anything else.
    """
    if isinstance(value, timedelta):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return timedelta(seconds=value)
    match = _DURATION.match(str(value))
    if not match:
        raise ValueError(f"not a duration: {value!r}")
    unit = (match.group(2) or "s")[0].lower()
    return timedelta(seconds=float(match.group(1)) * _UNIT_SECONDS[unit])


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0], True
    return tp, False


def _type_name(tp: Any) -> str:
    base, optional = _unwrap_optional(tp)
    names = {str: "string", int: "integer", float: "number", bool: "true/false", Secret: "secret", timedelta: "duration", ConfigPath: "path"}
    if typing.get_origin(base) in (list, tuple):
        name = "list of strings"
    else:
        name = names.get(base, getattr(base, "__name__", str(base)))
    return name + (" (optional)" if optional else "")


def _convert(value: Any, tp: Any, *, environ: Mapping[str, str] | None, base_dir: Path | None) -> Any:
    """Convert one raw TOML value to ``tp``; raises ValueError with a user-facing message."""
    base, optional = _unwrap_optional(tp)
    if value is None or (optional and value == ""):
        if optional:
            return None
        raise ValueError("a value is required")
    if base is str:
        if not isinstance(value, str):
            raise ValueError(f"must be a string (got {value!r})")
        return value
    if base is bool:
        if not isinstance(value, bool):
            raise ValueError(f"must be true or false (got {value!r})")
        return value
    if base is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, str) and value.strip().lstrip("-").isdigit():
                return int(value)
            raise ValueError(f"must be a whole number (got {value!r})")
        return value
    if base is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"must be a number (got {value!r})")
        return float(value)
    if base is timedelta:
        return parse_duration(value)
    if base is ConfigPath:
        if not isinstance(value, str) or not value:
            raise ValueError(f"must be a file path (got {value!r})")
        if value == "-":  # standard input or output, where a setting allows it
            return ConfigPath(value)
        path = Path(value).expanduser()
        if not path.is_absolute() and base_dir is not None:
            path = Path(base_dir) / path
        return ConfigPath(str(path))
    if base is Secret:
        if not isinstance(value, str):
            raise ValueError("must be a string: a literal, env:NAME or file:PATH")
        try:
            return resolve(value, environ=environ, base_dir=base_dir)
        except SecretReferenceError as exc:
            raise ValueError(str(exc)) from None
    if typing.get_origin(base) in (list, tuple):
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError(f"must be a list of strings (got {value!r})")
        return list(value)
    raise TypeError(f"unsupported setting type {tp!r}")  # a bug in a settings class


def _fields(cls: type) -> Iterator[tuple[attrs.Attribute[Any], SettingInfo]]:
    attrs.resolve_types(cls)
    for field in attrs.fields(cls):
        info = field.metadata.get(_META_KEY)
        if info is not None:
            yield field, info


def parse_settings(
    cls: type[T],
    raw: Mapping[str, Any],
    *,
    file: str,
    section: str,
    environ: Mapping[str, str] | None = None,
    base_dir: Path | None = None,
) -> tuple[T | None, list[Problem]]:
    """Parse one config table into ``cls``.

    :param cls: a settings class declared with :func:`setting`.
    :param raw: the table as read from TOML.
    :param file: the file name to show in problems.
    :param section: the table's dotted name (``sinks.ctia``), the prefix of every key shown.
    :param environ: environment for ``env:`` secrets (default :data:`os.environ`).
    :param base_dir: where relative ``file:`` secrets start.
    :returns: ``(settings, [])`` or ``(None, problems)``, never both.
    """
    problems: list[Problem] = []

    def key_of(name: str) -> str:
        return f"{section}.{name}" if section else name

    declared = dict(_fields(cls))
    names = {f.name for f in declared}
    for key in raw:
        if key not in names:
            close = difflib.get_close_matches(key, sorted(names), n=1, cutoff=0.6)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            problems.append(Problem(file, key_of(key), f"unknown key{hint}", ", ".join(sorted(names))))

    values: dict[str, Any] = {}
    stand_ins: dict[str, Any] = {}  # invalid or missing keys, for the cross-key rules
    for field, info in declared.items():
        if field.name not in raw:
            if field.default is attrs.NOTHING:
                problems.append(_missing(file, key_of(field.name), field, info))
                stand_ins[field.name] = stand_in(field, *_unwrap_optional(field.type))
            continue
        try:
            value = _convert(raw[field.name], field.type, environ=environ, base_dir=base_dir)
        except ValueError as exc:
            is_secret = _unwrap_optional(field.type)[0] is Secret
            allowed = "a literal, env:NAME of a variable that is set, or file:PATH of a readable file" if is_secret else _type_name(field.type)
            problems.append(Problem(file, key_of(field.name), str(exc), allowed))
            stand_ins[field.name] = stand_in(field, *_unwrap_optional(field.type))
            continue
        problem = _check_value(value, info)
        if problem:
            message, allowed = problem
            problems.append(Problem(file, key_of(field.name), message, allowed))
            stand_ins[field.name] = stand_in(field, *_unwrap_optional(field.type))
            continue
        if info.choices is not None:
            # Choices match case-insensitively; code compares with the declared spelling.
            value = [_declared(v, info.choices) for v in value] if isinstance(value, list) else _declared(value, info.choices)
        values[field.name] = value

    # Cross-key rules run even when single keys are invalid (every problem at once);
    # see exportkit.crosscheck for how rules that read an invalid key are left out.
    for key, message in cross_problems(cls, values, stand_ins):
        problems.append(Problem(file, key_of(key), message))
    if problems:
        return None, problems
    return cls(**values), []


def _missing(file: str, key: str, field: attrs.Attribute[Any], info: SettingInfo) -> Problem:
    """The problem for a required key left out: what type is allowed, and an example as an example."""
    if info.choices:
        return Problem(file, key, "is required but missing", ", ".join(map(str, info.choices)))
    message = "is required but missing" + (f"; for example {info.example}" if info.example else "")
    return Problem(file, key, message, _type_name(field.type))


def _declared(value: Any, choices: Sequence[Any]) -> Any:
    return normalise_choice(value, [c for c in choices if isinstance(c, str)]) if isinstance(value, str) else value


def _check_value(value: Any, info: SettingInfo) -> tuple[str, str] | None:
    if value is None:
        return None
    if info.choices is not None:
        items = value if isinstance(value, list) else [value]
        folded = {str(c).casefold(): c for c in info.choices}
        for item in items:
            if str(item).casefold() not in folded:
                return f"{item!r} is not allowed", ", ".join(map(str, info.choices))
    low, high = format_number(info.minimum), format_number(info.maximum)
    if info.minimum is not None and isinstance(value, (int, float)) and value < info.minimum:
        return f"{value} is below the minimum", f"{low}..{high}" if info.maximum is not None else f">= {low}"
    if info.maximum is not None and isinstance(value, (int, float)) and value > info.maximum:
        return f"{value} is above the maximum", f"{low}..{high}" if info.minimum is not None else f"<= {high}"
    if info.check is not None:
        message = info.check(value)
        if message:
            return message, ""
    return None


@attrs.frozen
class SettingDoc:
    """One row of the configuration reference."""

    key: str
    type: str
    default: str
    help: str
    choices: tuple[str, ...]
    secret: bool
    #: asked in interactive set-up (required keys always are)
    prompt: bool = False


def describe(cls: type) -> list[SettingDoc]:
    """Describe every key of a settings class, in declaration order (for docs and prompts)."""
    rows = []
    for field, info in _fields(cls):
        if field.default is attrs.NOTHING:
            default = "required"
        elif isinstance(field.default, attrs.Factory):  # type: ignore[arg-type]
            factory: Any = field.default
            default = repr(factory.factory())
        elif isinstance(field.default, timedelta):
            default = f"{int(field.default.total_seconds())}s"
        else:
            default = "none" if field.default is None else repr(field.default)
        base, _ = _unwrap_optional(field.type)
        rows.append(
            SettingDoc(
                key=field.name,
                type=_type_name(field.type),
                default=default,
                help=info.help,
                choices=tuple(str(c) for c in info.choices or ()),
                secret=base is Secret,
                prompt=info.prompt or field.default is attrs.NOTHING,
            )
        )
    return rows


def secret_keys(cls: type) -> list[str]:
    """Names of the keys of ``cls`` that hold secrets."""
    return [row.key for row in describe(cls) if row.secret]


def http_url(example: str) -> Callable[[Any], str | None]:
    """A ``check=`` rule for :func:`setting`: an http(s) URL with a host.

    :param example: shown in the message, e.g. ``"https://hooks.example.com/exportkit"``.
    """

    def check(value: Any) -> str | None:
        parts = urlsplit(str(value))
        if parts.scheme not in ("http", "https") or not parts.netloc:
            return f"must be an http(s) URL with a host, like {example}"
        return None

    return check


def format_number(value: float | None) -> str:
    """A bound as people write it: ``1000000`` (never ``1e+06``), ``0.5``; ``""`` for ``None``."""
    if value is None:
        return ""
    if float(value).is_integer():
        return str(int(value))
    return repr(float(value))


def normalise_choice(value: str, choices: Iterable[str]) -> str:
    """Return the declared spelling of a choice matched case-insensitively (``malicious`` -> ``Malicious``)."""
    for choice in choices:
        if choice.casefold() == value.casefold():
            return choice
    return value
