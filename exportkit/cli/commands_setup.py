"""``exportkit configure`` and the first-run setup: write an instance config, verify it, say what next."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import click

from exportkit.cli import cli
from exportkit.cli.common import config_option
from exportkit.config import config_path, list_instances, parse_instance, read_toml, validate_instance_name, write_config
from exportkit.errors import ConfigError, ExportkitError
from exportkit.plugins import discover
from exportkit.secrets import is_reference
from exportkit.settings import describe

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["configure", "first_run", "build_config"]

_TQ_OPTIONS = ("host", "client_id", "username", "password", "collection")


def _parse_value(text: str) -> Any:
    """A --set value: TOML syntax when it parses (numbers, booleans, lists), else the plain string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except (tomllib.TOMLDecodeError, RecursionError):
        return text


def _assign(data: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = data
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise click.BadParameter(f"{dotted}: {key} is not a table", param_hint="--set")
    node[keys[-1]] = value


def ask(text: str, **options: Any) -> Any:
    """``click.prompt`` on standard error: questions go to the terminal, never into redirected output."""
    return click.prompt(text, err=True, **options)


def _prompt_sink(sink: str, settings_class: type) -> dict[str, Any]:
    """Ask for the keys a sink requires and those it marks ``prompt``; an empty answer keeps the default."""
    table: dict[str, Any] = {}
    for row in describe(settings_class):
        if not row.prompt:
            continue
        required = row.default == "required"
        label = f"{sink}: {row.key} ({row.help.rstrip('.')})"
        if not required and not row.choices:
            label += " [Enter to leave unset]" if row.default == "none" else ""
        default: Any = None if required else ("" if row.default == "none" else row.default.strip("'\""))
        if row.choices:
            value = ask(label, type=click.Choice(row.choices, case_sensitive=False), default=default)
        else:
            value = ask(label, hide_input=row.secret, default=default, show_default=not row.secret and bool(default))
        if required or str(value) != str(default):
            table[row.key] = value
    return table


def build_config(
    *,
    sinks: tuple[str, ...],
    source: dict[str, Any],
    assignments: tuple[str, ...],
    interactive: bool,
) -> dict[str, Any]:
    """The config as a dict: source table, export table, sink tables (prompted or from --set)."""
    registry = discover()
    data: dict[str, Any] = {"source": source, "export": {"sinks": list(sinks)}, "sinks": {}}
    for sink in sinks:
        sink_type = registry.sink_types.get(sink)
        if sink_type is None:
            raise ExportkitError(f"no installed plugin provides sink {sink!r} (installed: {', '.join(sorted(registry.sink_types)) or 'none'})")
        preset = [a for a in assignments if a.startswith(f"sinks.{sink}.")]
        data["sinks"][sink] = _prompt_sink(sink, sink_type.settings_class) if interactive and not preset else {}
    for assignment in assignments:
        key, sep, value = assignment.partition("=")
        if not sep:
            raise click.BadParameter(f"{assignment!r} is not KEY=VALUE", param_hint="--set")
        _assign(data, key.strip(), _parse_value(value.strip()))
    return data


def _source_table(options: dict[str, Any], interactive: bool) -> dict[str, Any]:
    if options.get("source_file"):
        return {"type": "file", "path": options["source_file"]}
    given = {k: options[k] for k in _TQ_OPTIONS if options.get(k)}
    if len(given) == len(_TQ_OPTIONS):
        table = {"type": "threatq", **given}
        if options.get("status"):
            table["status"] = options["status"]
        return table
    if not interactive:
        missing = ", ".join("--" + k.replace("_", "-") for k in _TQ_OPTIONS if k not in given)
        raise ExportkitError(
            f"no terminal to ask on, and these options are missing: {missing} "
            "(or set EXPORTKIT_TQ_HOST, EXPORTKIT_TQ_CLIENT_ID, EXPORTKIT_TQ_USERNAME, EXPORTKIT_TQ_PASSWORD, EXPORTKIT_TQ_COLLECTION)"
        )
    from exportkit.threatq.firstrun import prompt_source_table

    return prompt_source_table(ask)


def _verify(name: str, config_dir: Path, data: dict[str, Any], *, sign_in: bool) -> None:
    """Validate the config data and check the source credentials; raise with what to fix. Writes nothing."""
    registry = discover()
    path = config_path(config_dir, name)
    try:
        parse_instance(data, path, name, registry.sink_types, unavailable_sinks=registry.unavailable, check_file_mode=False)
    except ConfigError as exc:
        raise ConfigError(f"{path} was not written: the configuration is not valid; correct it and run configure again", exc.problems) from None
    source = data["source"]
    if sign_in and source.get("type", "threatq") == "threatq":
        from exportkit.threatq.firstrun import verify_source_table

        try:
            click.echo(verify_source_table(source, config_dir=config_dir), err=True)
        except ExportkitError:
            click.echo(f"{path} was not written; run configure again with the fix.", err=True)
            raise


def write_and_verify(name: str, config_dir: Path, data: dict[str, Any], *, verify: bool) -> int:
    """Check the config (settings, and with ``verify`` the ThreatQ sign-in), then write it 0600.

    Nothing is written when a check fails, so the rerun with the fix needs no ``--force``.
    """
    _verify(name, config_dir, data, sign_in=verify)
    path = write_config(config_path(config_dir, name), data)
    click.echo(f"Wrote {path} (mode 600).", err=True)
    click.echo(
        f"Next: review the sink settings in {path} (docs/configuration.md lists every key), then\n"
        f"  exportkit check -n {name} -c {config_dir}\n"
        f"  exportkit run -n {name} -c {config_dir} -ll <log folder>",
        err=True,
    )
    return 0


_SECRET_KEY = re.compile(r"(password|secret|token|api_key|apikey)", re.I)


def command_line_secrets(ctx: click.Context, password: str | None, assignments: tuple[str, ...]) -> list[str]:
    """Warnings for secrets given as literal values on the command line, where every local user
    can read them in the process list (``ps``) and they stay in the shell history."""
    out = []
    advice = "other users can read it in the process list; use env:NAME or file:PATH, or leave it out and answer the prompt"
    from_command_line = ctx.get_parameter_source("password") == click.core.ParameterSource.COMMANDLINE
    if password and from_command_line and not is_reference(password):
        out.append(f"--password puts a secret on the command line: {advice}")
    for assignment in assignments:
        key, _, value = assignment.partition("=")
        if _SECRET_KEY.search(key.rsplit(".", 1)[-1]) and value.strip() and not is_reference(value.strip().strip('"')):
            out.append(f"--set {key.strip()}=... puts a secret on the command line: {advice}")
    return out


def first_run(*, name: str, config_dir: Path, default_sinks: tuple[str, ...]) -> int:
    """What a run does when its instance has no config: ask on a terminal, else explain and exit 1."""
    path = config_path(config_dir, name)
    if not sys.stdin.isatty():
        raise ExportkitError(
            f"instance {name!r} has no configuration ({path} does not exist) and there is no terminal to ask on. "
            f"Create it with 'exportkit configure -n {name} -c {config_dir}' on a terminal, or non-interactively with "
            "--host/--client-id/--username/--password/--collection (see 'exportkit configure --help')."
        )
    others = list_instances(config_dir)
    if others:
        # On a terminal a typo in -n would otherwise start setting up a new instance.
        click.echo(f"There is no instance {name!r} in {config_dir}; its instances are: {', '.join(others)}.", err=True)
        if not click.confirm(f"Create a new instance {name!r}?", default=False, err=True):
            raise ExportkitError(f"no instance {name!r}; nothing was created (choose one of: {', '.join(others)})")
    click.echo(f"Instance {name!r} has no configuration yet; answering these questions creates {path}.", err=True)
    source = _source_table({}, interactive=True)
    data = build_config(sinks=default_sinks, source=source, assignments=(), interactive=True)
    return write_and_verify(name, config_dir, data, verify=True)


@cli.command()
@config_option
@click.option("-n", "--name", required=True, help="Instance name.")
@click.option("--sink", "sinks", multiple=True, help="A sink for this instance (repeatable). Default: ctia.")
@click.option("--host", envvar="EXPORTKIT_TQ_HOST", help="ThreatQ host (https:// assumed).")
@click.option("--client-id", envvar="EXPORTKIT_TQ_CLIENT_ID", help="ThreatQ OAuth client id.")
@click.option("--username", envvar="EXPORTKIT_TQ_USERNAME", help="ThreatQ user (e-mail).")
@click.option("--password", envvar="EXPORTKIT_TQ_PASSWORD", help="ThreatQ password, or env:NAME / file:PATH (stored as given).")
@click.option("--collection", envvar="EXPORTKIT_TQ_COLLECTION", help="The Data Collection to export.")
@click.option("--status", envvar="EXPORTKIT_TQ_STATUS", default=None, help="Default status (as the connector asked).")
@click.option("--source-file", type=click.Path(dir_okay=False), help="Use the file source (JSONL records) instead of ThreatQ.")
@click.option("--set", "assignments", multiple=True, metavar="KEY=VALUE", help="Any setting, e.g. sinks.ctia.client_id=abc (repeatable).")
@click.option("--no-verify", is_flag=True, help="Do not contact ThreatQ to check the credentials.")
@click.option("--force", is_flag=True, help="Replace an existing config file.")
def configure(config_dir: Path, name: str, sinks: tuple[str, ...], no_verify: bool, force: bool, assignments: tuple[str, ...], **options: Any) -> None:
    """Create an instance config: interactively on a terminal, or from options and environment variables.

    \b
    Example (interactive):
      exportkit configure -n prod -c /etc/exportkit
    Example (non-interactive, secrets by reference):
      exportkit configure -n prod -c /etc/exportkit --host tq.example.com --client-id abc \\
        --username analyst@example.com --password env:TQ_PASSWORD --collection "CTR Export" \\
        --sink ctia --set sinks.ctia.client_id=xyz --set sinks.ctia.client_password=env:CTR_SECRET
    """
    validate_instance_name(name)
    for warning in command_line_secrets(click.get_current_context(), options.get("password"), assignments):
        click.echo(f"Warning: {warning}", err=True)
    path = config_path(config_dir, name)
    if path.exists() and not force:
        read_toml(path)  # a broken file is reported as such
        raise ExportkitError(f"{path} exists already; edit it, or pass --force to replace it")
    interactive = sys.stdin.isatty()
    source = _source_table(options, interactive)
    data = build_config(sinks=sinks or ("ctia",), source=source, assignments=assignments, interactive=interactive)
    sys.exit(write_and_verify(name, config_dir, data, verify=not no_verify))
