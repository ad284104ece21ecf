"""The ``exportkit`` command line: a thin click layer over the library.

Each command parses options, calls the library, and prints. Library errors
(:class:`~exportkit.errors.ExportkitError`) become a message on stderr and
their exit code, never a traceback; anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from exportkit import __version__
from exportkit.errors import ExportkitError
from exportkit.escape import visible
from exportkit.secrets import redact

__all__ = ["cli", "main"]


def invoke_handling_errors(invoke: Any, ctx: click.Context) -> Any:
    """Run a click invoke; an ExportkitError becomes ``Error: message`` on stderr and its exit code."""
    try:
        return invoke(ctx)
    except ExportkitError as exc:
        # Keep the message's own line breaks (a config error lists one problem a line), but no
        # other control character from outside text reaches the terminal.
        text = "\n".join(visible(line) for line in redact(str(exc)).split("\n"))
        click.echo(f"Error: {text}", err=True)
        ctx.exit(exc.exit_code)


class ExportkitCommand(click.Command):
    """A stand-alone click command with exportkit's error handling (``tq-conn-ctr-exporter``)."""

    def invoke(self, ctx: click.Context) -> Any:
        return invoke_handling_errors(super().invoke, ctx)


class ExportkitGroup(click.Group):
    """A click group that turns ExportkitError into a clean message and exit code, and loads plugin commands lazily."""

    _plugin_commands_loaded = False

    def invoke(self, ctx: click.Context) -> Any:
        return invoke_handling_errors(super().invoke, ctx)

    def _load_plugin_commands(self) -> None:
        if ExportkitGroup._plugin_commands_loaded:
            return
        ExportkitGroup._plugin_commands_loaded = True
        from exportkit.plugins import call_each, discover

        def report(plugin: Any, exc: BaseException) -> None:
            click.echo(f"Warning: plugin {plugin.name} could not add its commands: {exc}", err=True)

        call_each(discover(), "exportkit_add_commands", report, cli=self)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        # Plugins may add to existing groups too (``emulate ctia``), so load them first.
        self._load_plugin_commands()
        return super().get_command(ctx, name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        self._load_plugin_commands()
        return super().list_commands(ctx)


@click.group(cls=ExportkitGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="exportkit")
def cli() -> None:
    """Export threat-intelligence indicators from ThreatQ Data Collections to CTIA and other sinks.

    \b
    Start here:
      exportkit configure -n prod -c /etc/exportkit      # first instance, interactively
      exportkit check -n prod -c /etc/exportkit          # config, plugins, endpoints
      exportkit run -n prod -c /etc/exportkit -ll /var/log/exportkit
      exportkit demo                                     # everything on loopback emulators
    """


@cli.group()
def emulate() -> None:
    """Run an emulator on 127.0.0.1 (for trying things out and for tests)."""


@emulate.command("threatq", context_settings={"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []})
@click.pass_context
def emulate_threatq(ctx: click.Context) -> None:
    """Emulate a ThreatQ server with a seeded data set (see --help)."""
    from exportkit.threatq.commands import emulate_threatq as command

    command.main(args=ctx.args, prog_name="exportkit emulate threatq", standalone_mode=True)


def main() -> None:
    """Console-script entry point."""
    cli.main(prog_name="exportkit")


# The command modules add themselves to ``cli``; imported last because they import it.
from exportkit.cli import commands_demo, commands_fleet, commands_inspect, commands_run, commands_setup  # noqa: E402,F401

if __name__ == "__main__":  # pragma: no cover
    main()
