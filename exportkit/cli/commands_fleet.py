"""``exportkit state migrate`` and ``exportkit fleet worker|beat|status``: state in PostgreSQL, runs on Celery."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from exportkit.cli import cli
from exportkit.cli.common import config_option, name_option, resolve_name
from exportkit.cli.commands_inspect import state
from exportkit.errors import ExportkitError
from exportkit.secrets import SecretReferenceError, resolve

__all__ = ["state_migrate", "fleet"]


def _url_option(value: str, what: str) -> str:
    """A URL given on the command line: literal, ``env:NAME`` or ``file:PATH`` (keeps passwords out of ``ps``)."""
    try:
        return resolve(value).reveal()
    except SecretReferenceError as exc:
        raise click.BadParameter(str(exc), param_hint=what) from None


@state.command("migrate")
@config_option
@name_option
@click.option("--to", "target", required=True, metavar="URL",
              help="The PostgreSQL state database: postgresql://USER:PASSWORD@HOST:PORT/DB, or env:NAME / file:PATH holding it.")
def state_migrate(config_dir: Path, name: str | None, target: str) -> None:
    """Move an instance's SQLite state into PostgreSQL (checkpoint, holdings, stores, dead letters, history).

    \b
    The copy is verified (row counts) and committed in one transaction; the
    SQLite file stays as a backup, marked as moved. Then point the instance
    at PostgreSQL on every host: [state] url in its config, or EXPORTKIT_STATE_URL.

    \b
    Example:
      exportkit state migrate -n prod -c /etc/exportkit --to env:EXPORTKIT_STATE_URL
    """
    from exportkit.postgres.connect import is_postgres_url
    from exportkit.postgres.move import move_to_postgres

    instance = resolve_name(config_dir, name)
    url = _url_option(target, "--to")
    if not is_postgres_url(url):
        raise click.BadParameter("must be a postgresql:// URL", param_hint="--to")
    result = move_to_postgres(config_dir, instance, url)
    copied = ", ".join(f"{table} {count}" for table, count in result.counts.items())
    click.echo(f"moved the state of {instance} to {result.target}: {copied} (counts verified)")
    click.echo(f"{result.source} is kept as a backup and marked as moved.")
    click.echo(f'Now, on every host that runs {instance}: set [state] url = "env:EXPORTKIT_STATE_URL" '
               f"(or the URL) in {instance}.toml, or export EXPORTKIT_STATE_URL.")


@cli.group()
def fleet() -> None:
    """Run many instances on many hosts: Celery workers and beat, state in PostgreSQL (docs/fleet.md)."""


def _celery_side() -> Any:
    """The worker module, or a clear message when Celery is not installed."""
    try:
        from exportkit.fleet import worker
    except ImportError as exc:
        raise ExportkitError(f"the fleet runner needs Celery ({exc}): pip install 'exportkit-core[fleet]'") from None
    return worker


def _broker_option(func: Any) -> Any:
    return click.option(
        "--broker", required=True, envvar="EXPORTKIT_BROKER_URL", metavar="URL",
        help="Celery broker: redis://HOST:6379/0 (or amqp://...); env:NAME / file:PATH also work. Default: $EXPORTKIT_BROKER_URL.",
    )(func)


@fleet.command("worker")
@_broker_option
@config_option
@click.option("--concurrency", type=click.IntRange(1), default=2, show_default=True, help="Instance runs at once on this worker.")
@click.option("--hostname", default=None, help="Celery node name (default: exportkit@HOST).")
@click.option("-l", "--loglevel", default="INFO", show_default=True, help="Celery's log level.")
@click.option("-ll", "--loglocation", default=None, help="Log folder for the runs (default: the config folder).")
def fleet_worker(broker: str, config_dir: Path, concurrency: int, hostname: str | None, loglevel: str, loglocation: str | None) -> None:
    """Run the instances beat sends, each exactly like `exportkit run` (same report, exit code, history).

    Every host runs one worker with its own copy of the config folder.
    """
    sys.exit(_celery_side().run_worker(_url_option(broker, "--broker"), config_dir, concurrency=concurrency, hostname=hostname,
                        loglevel=loglevel, loglocation=loglocation))


@fleet.command("beat")
@_broker_option
@config_option
@click.option("-l", "--loglevel", default="INFO", show_default=True, help="Celery's log level.")
def fleet_beat(broker: str, config_dir: Path, loglevel: str) -> None:
    """Send each scheduled instance ([schedule] every or cron) to the workers on time. Run exactly one."""
    sys.exit(_celery_side().run_beat(_url_option(broker, "--broker"), config_dir, loglevel=loglevel))


@fleet.command("status")
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list, one object per instance.")
def fleet_status(config_dir: Path, as_json: bool) -> None:
    """Each instance: schedule, last run (host, exit code, counts), next run, and the host running it now."""
    from exportkit.fleet.status import fleet_rows, render_rows

    if not config_dir.is_dir():
        raise ExportkitError(f"config folder {config_dir} does not exist (pass the folder with -c or set EXPORTKIT_CONFIG)")
    rows = fleet_rows(config_dir)
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    for line in render_rows(rows):
        click.echo(line)
