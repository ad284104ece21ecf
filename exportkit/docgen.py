"""Generate the configuration reference in docs/configuration.md from the settings classes.

The reference is built from the same declarations the config loader parses
with (:func:`exportkit.settings.describe`), so docs and code cannot drift:
``tests/test_docgen.py`` fails when the file is out of date.

Usage::

    python -m exportkit.docgen                                # print the reference
    python -m exportkit.docgen --write docs/configuration.md  # replace the generated block
    python -m exportkit.docgen --check docs/configuration.md  # exit 1 when the block differs

The block sits between :data:`BEGIN` and :data:`END` in the file. Sink tables
come from every installed plugin (``exportkit plugins``), so run it in an
environment with exactly the distributions the docs describe.
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import sys
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import attrs

from exportkit.settings import SettingDoc, SettingInfo, describe, format_number, setting_info

__all__ = ["BEGIN", "END", "render_reference", "render_table", "replace_block", "extract_block", "main"]

BEGIN = "<!-- BEGIN GENERATED REFERENCE -->"
END = "<!-- END GENERATED REFERENCE -->"


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ").strip()


def _code(text: str) -> str:
    return f"`{text}`" if "`" not in text else f"``{text}``"


def toml_default(default: str) -> str:
    """A :func:`describe` default (a Python repr) as it would be written in TOML."""
    if default in ("required", "none"):
        return default
    match = re.fullmatch(r"(\d+)s", default)
    if match:  # a duration, in the largest whole unit
        seconds = int(match.group(1))
        for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
            if seconds and seconds % size == 0 and not (unit == "d" and seconds // size < 2):
                return json.dumps(f"{seconds // size}{unit}")
        return json.dumps(f"{seconds}s")
    try:
        value: Any = ast.literal_eval(default)
    except (ValueError, SyntaxError):
        return default
    if isinstance(value, float) and value.is_integer():
        return f"{value:.1f}"
    return json.dumps(value, ensure_ascii=False)


def _infos(settings_class: type) -> dict[str, SettingInfo]:
    attrs.resolve_types(settings_class)
    out = {}
    for field in attrs.fields(settings_class):
        info = setting_info(field)
        if info is not None:
            out[field.name] = info
    return out


def _range(info: SettingInfo | None) -> str:
    if info is None or (info.minimum is None and info.maximum is None):
        return ""
    low, high = format_number(info.minimum), format_number(info.maximum)
    if info.minimum is not None and info.maximum is not None:
        return f" Range: {low} to {high}."
    if info.minimum is not None:
        return f" At least {low}."
    return f" At most {high}."


def render_table(rows: Iterable[SettingDoc], infos: Mapping[str, SettingInfo] | None = None) -> str:
    """One Markdown table: key, type, default, description (with choices, ranges and secret notes)."""
    infos = infos or {}
    lines = ["| Key | Type | Default | Description |", "|---|---|---|---|"]
    for row in rows:
        default = toml_default(row.default)
        default = "**required**" if default == "required" else "none" if default == "none" else _code(default)
        text = re.sub(r"([<>])", r"\\\1", row.help)  # not HTML: <body> must show as text
        if row.choices:
            text += " One of: " + ", ".join(_code(c) for c in row.choices) + "."
        text += _range(infos.get(row.key))
        if row.secret and "env:" not in row.help:
            text += " A secret: a literal, `env:NAME` or `file:PATH`."
        info = infos.get(row.key)
        if row.default == "required" and info is not None and info.example:
            text += f" Example: {_code(info.example)}."
        lines.append(f"| {_code(row.key)} | {_cell(row.type)} | {_cell(default)} | {_cell(text)} |")
    return "\n".join(lines)


def _section(title: str, intro: str, settings_class: type) -> str:
    return f"### {title}\n\n{intro}\n\n{render_table(describe(settings_class), _infos(settings_class))}\n"


def render_reference() -> str:
    """The whole generated reference (Markdown), without the markers."""
    from exportkit.config import ExportSettings
    from exportkit.file_source import FileSettings
    from exportkit.fleet.settings import ScheduleSettings, StateSettings
    from exportkit.plugins import discover
    from exportkit.threatq.source import ThreatQSettings

    parts = [
        "_Generated from the settings classes by `python -m exportkit.docgen --write docs/configuration.md`; "
        "do not edit by hand._\n",
        _section('`[source]` with `type = "threatq"` (the default)', "Where the indicators come from: one ThreatQ Data Collection.", ThreatQSettings),
        _section('`[source]` with `type = "file"`', "JSONL records (the stdout sink's `jsonl` output), for tests, replays and air-gapped transfers.", FileSettings),
        _section("`[export]`", "What this instance sends where, and how.", ExportSettings),
        _section("`[state]`", "Where the instance keeps its state and lock (see `docs/fleet.md`).", StateSettings),
        _section("`[schedule]`", "When `exportkit fleet beat` runs the instance: one of the two keys (see `docs/fleet.md`).", ScheduleSettings),
    ]
    registry = discover()
    for name, sink_type in sorted(registry.sink_types.items()):
        origin = registry.origin(name)
        dist = f" (distribution `{origin.distribution}`)" if origin is not None and origin.distribution else ""
        intro = (sink_type.description or f"The {name} sink.") + dist + (
            f' A table for a second sink of this type is `[sinks.OTHER]` with `type = "{name}"` and the same keys.'
        )
        parts.append(_section(f"`[sinks.{name}]`", intro, sink_type.settings_class))
    return "\n".join(parts).rstrip() + "\n"


def extract_block(text: str) -> str | None:
    """The text between the markers (without them), or ``None`` when they are missing."""
    start = text.find(BEGIN)
    end = text.find(END)
    if start < 0 or end < start:
        return None
    return text[start + len(BEGIN) : end].strip("\n") + "\n"


def replace_block(text: str, reference: str) -> str:
    """``text`` with the block between the markers replaced by ``reference``.

    :raises ValueError: the markers are missing or out of order.
    """
    start = text.find(BEGIN)
    end = text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"the file needs the lines {BEGIN} and {END} (in that order)")
    return text[: start + len(BEGIN)] + "\n\n" + reference.strip("\n") + "\n\n" + text[end:]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m exportkit.docgen", description="Generate the configuration reference.")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--write", metavar="FILE", type=Path, help="replace the generated block in FILE")
    group.add_argument("--check", metavar="FILE", type=Path, help="exit 1 when FILE's generated block is out of date")
    args = parser.parse_args(argv)
    reference = render_reference()
    if args.write is None and args.check is None:
        sys.stdout.write(reference)
        return 0
    path: Path = args.write or args.check
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        print(f"cannot read {path}: {exc.strerror}", file=sys.stderr)
        return 1
    if args.check is not None:
        found = extract_block(text)
        if found is None:
            print(f"{path}: no generated block ({BEGIN} ... {END})", file=sys.stderr)
            return 1
        if found.strip() != reference.strip():
            print(f"{path}: the configuration reference is out of date; run python -m exportkit.docgen --write {path}", file=sys.stderr)
            return 1
        print(f"{path}: up to date")
        return 0
    try:
        updated = replace_block(text, reference)
    except ValueError as exc:
        print(f"{path}: {exc}", file=sys.stderr)
        return 1
    if updated != text:
        path.write_text(updated, encoding="utf-8")
        print(f"{path}: reference updated")
    else:
        print(f"{path}: up to date")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
