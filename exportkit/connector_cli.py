"""``tq-conn-ctr-exporter``: the Cisco Threat Response Exporter connector's command, kept working.

It takes exactly the connector's flags (``-ll -c -v -ep -n -hist``) and runs
one instance, ``tq-conn-ctr-exporter`` unless ``-n`` names another. On its
first run it asks the connector's questions (ThreatQ host, client id, user,
password, status, collection) and then for the CTIA client credentials, and
writes an instance whose sink is ``ctia``. Everything else is ``exportkit
run``; see docs/migrating-from-tq-conn-ctr-exporter.md for where each
connector setting lives now.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from exportkit import __version__
from exportkit.cli import ExportkitCommand
from exportkit.cli.commands_run import execute_run, run_options

__all__ = ["main", "DEFAULT_INSTANCE"]

DEFAULT_INSTANCE = "tq-conn-ctr-exporter"


@click.command(cls=ExportkitCommand, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-n", "--name", default=DEFAULT_INSTANCE, show_default=True, help="Instance name.")
@run_options
@click.version_option(__version__, prog_name="tq-conn-ctr-exporter (exportkit)")
def command(name: str, config_dir: Path, **options: Any) -> None:
    """Export indicator judgements from a ThreatQ Data Collection to Cisco Threat Response (CTIA).

    \b
    Example (cron, every 15 minutes):
      */15 * * * * tq-conn-ctr-exporter -c /etc/tq-ctr -ll /var/log/tq-ctr -v 2
    """
    sys.exit(execute_run(name=name, config_dir=config_dir, default_sinks=("ctia",), **options))


def main() -> None:
    """Console-script entry point."""
    command.main(prog_name="tq-conn-ctr-exporter")


if __name__ == "__main__":
    main()
