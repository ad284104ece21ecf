"""Interactive first-run setup of the ThreatQ ``[source]`` table (used by the core ``configure`` command).

The prompts follow ThreatQ's connector convention, in this order: ThreatQ
Host, ThreatQ Client ID, ThreatQ Username, ThreatQ Password (hidden), Status
(default "Review"), then Data Collection (the collection to export). Nothing
here writes files: the core writes the config file (mode 0600) and decides
how the password is stored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import click

from exportkit.errors import ConfigError
from exportkit.settings import parse_settings
from exportkit.threatq.source import ThreatQSettings, ThreatQSource

__all__ = ["prompt_source_table", "verify_source_table", "PROMPTS"]

#: the prompts, in the order they are asked: (text, key in the [source] table)
PROMPTS: tuple[tuple[str, str], ...] = (
    ("ThreatQ Host", "host"),
    ("ThreatQ Client ID", "client_id"),
    ("ThreatQ Username", "username"),
    ("ThreatQ Password", "password"),
    ("Status", "status"),
    ("Data Collection", "collection"),
)


def _ask_on_stderr(text: str, **options: Any) -> Any:
    return click.prompt(text, err=True, **options)


def prompt_source_table(prompt: Callable[..., Any] = _ask_on_stderr) -> dict[str, Any]:
    """Ask for the ThreatQ settings and return the ``[source]`` table (keys of :class:`ThreatQSettings`).

    :param prompt: a ``click.prompt``-compatible function (tests pass a fake); the
        default asks on standard error, so that redirected output never holds a question.
    :returns: ``{"type": "threatq", "host", "client_id", "username", "password", "status", "collection"}``;
        the password is the literal typed, for the core to store as it chooses.
    """
    table: dict[str, Any] = {"type": "threatq"}
    for text, key in PROMPTS:
        if key == "password":
            value = prompt(text, hide_input=True)
        elif key == "status":
            value = prompt(text, default="Review")
        else:
            value = prompt(text)
        table[key] = str(value).strip() if key != "password" else str(value)
    return table


def verify_source_table(table: dict[str, Any], *, config_dir: Path | str) -> str:
    """Parse ``table``, sign in to ThreatQ and find the collection; return a one-line success message.

    :raises ConfigError: the table does not parse (every problem listed).
    :raises SourceAuthError: the credentials were rejected.
    :raises SourceError: unreachable, or no such collection (the message lists the existing ones).
    """
    config_dir = Path(config_dir)
    settings, problems = parse_settings(ThreatQSettings, table, file="first-run setup", section="source", base_dir=config_dir)
    if settings is None:
        raise ConfigError("the ThreatQ settings are not valid", problems)
    source = ThreatQSource(settings, config_dir=config_dir)
    try:
        source.open()  # SourceAuthError / SourceError propagate with their clear messages
        lines = source.check()
    finally:
        source.close()
    who = settings.username if settings.grant == "password" else f"OAuth client {settings.client_id}"
    found = lines[1] if len(lines) > 1 else f"Data Collection {settings.collection!r} found"
    return f"Signed in to ThreatQ at {settings.host} as {who}; {found}."
