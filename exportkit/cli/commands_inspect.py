"""Commands that look at instances without exporting: check, plugins, instances, state, dlq."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from exportkit.cli import cli
from exportkit.cli.common import check_sink_name, config_option, has_state, load, name_option, open_state, resolve_name
from exportkit.config import list_instances
from exportkit.escape import visible
from exportkit.checks import check_instance
from exportkit.errors import ConfigError, ExportkitError
from exportkit.plugins import discover, listing, sink_hooks
from exportkit.replay import replay_dead_letters
from exportkit.state import SOURCE_SINK
from exportkit.statestore import instance_lock

__all__ = ["check", "plugins", "instances", "state", "dlq"]


@cli.command()
@config_option
@name_option
@click.option("--json", "as_json", is_flag=True, help='Print {"ok", "checks": [{"part", "ok", "lines"}]} as JSON.')
def check(config_dir: Path, name: str | None, as_json: bool) -> None:
    """Check an instance: config, plugins, and each endpoint's reachability and credentials.

    Sends nothing and changes no state. Exit 0 when every check passed, 1 otherwise.

    \b
    Example:
      exportkit check -n prod -c /etc/exportkit
      exportkit check -n prod -c /etc/exportkit --json
    """
    instance = resolve_name(config_dir, name)
    registry = discover()
    checks: list[tuple[str, bool, list[str]]] = []
    try:
        config, _ = load(config_dir, instance, registry)
    except ConfigError as exc:
        checks.append(("config", False, [str(exc)]))
        warnings: tuple[str, ...] = ()
    else:
        checks.append(("config", True, [str(config.path)]))
        warnings = config.warnings
        for sink in config.sinks:
            origin = registry.origin(config.sink_type_of(sink))
            checks.append((f"plugin {sink}", True, [f"{origin.distribution if origin else '?'} {origin.version if origin else ''}".rstrip()]))
        checks += check_instance(config, registry)
    failed = not all(ok for _, ok, _ in checks)
    if as_json:
        data = {
            "instance": instance, "ok": not failed, "warnings": list(warnings),
            "checks": [{"part": p, "ok": ok, "lines": lines} for p, ok, lines in checks],
        }
        click.echo(json.dumps(data, indent=2))
    else:
        for part, ok, lines in checks:
            head = "ok  " if ok else "FAIL"
            # A config that does not load says so on stderr, where the problems list goes.
            # Lines carry outside text (server errors): no control characters reach the terminal.
            # A config error keeps its one-problem-a-line layout.
            first = "\n".join(visible(line) for line in lines[0].split("\n")) if lines else ""
            click.echo(f"{head} {part}{':' if part != 'config' or not ok else ''} {first}", err=part == "config" and not ok)
            for line in lines[1:]:
                click.echo(f"       {visible(line)}")
            if part == "config":
                # Weak but allowed settings (TLS checks off, plain http://, a readable secret file).
                for warning in warnings:
                    click.echo(f"WARN config: {visible(warning)}")
    sys.exit(1 if failed else 0)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def plugins(as_json: bool) -> None:
    """List installed sink plugins (distribution, version, hooks) and any that failed to load.

    Exit 1 when a plugin failed to load or a sink's hooks fail validation.
    """
    registry = discover()
    if as_json:
        data = {
            "loaded": [
                {
                    "name": p.name,
                    "distribution": p.distribution,
                    "version": p.version,
                    "sinks": [s.name for s in p.sink_types],
                    "sources": [s.name for s in p.source_types],
                    "hooks": list(p.hooks),
                    "sink_hooks": {s.name: list(sink_hooks(s)) for s in p.sink_types},
                    "invalid": dict(p.invalid),
                }
                for p in registry.loaded
            ],
            "failed": [{"name": f.name, "distribution": f.distribution, "version": f.version, "error": f.error} for f in registry.failed],
            "disabled": [{"name": d.name, "distribution": d.distribution, "version": d.version} for d in registry.disabled],
        }
        click.echo(json.dumps(data, indent=2))
        sys.exit(1 if registry.failed or any(p.invalid for p in registry.loaded) else 0)
    for line in listing(registry):
        click.echo(line)
    if registry.failed or any(p.invalid for p in registry.loaded):  # scripts and monitoring notice a broken plugin
        sys.exit(1)


def outcome_word(exit_code: int | None) -> str:
    """How a run ended, in a word (``None``: it never recorded an end)."""
    if exit_code is None:
        return "running or interrupted"
    return {0: "ok", 1: "failed", 2: "usage error", 3: "partial", 4: "locked"}.get(exit_code, f"exit {exit_code}")


@cli.command()
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list: name, last run (or null), checkpoint.")
def instances(config_dir: Path, as_json: bool) -> None:
    """List the instances in a config folder with their last run and its result."""
    if not config_dir.is_dir():
        raise ExportkitError(f"config folder {config_dir} does not exist (pass the folder with -c or set EXPORTKIT_CONFIG)")
    rows: list[dict[str, Any]] = []
    for name in list_instances(config_dir):
        last, checkpoint = None, None
        if has_state(config_dir, name):
            with open_state(config_dir, name) as st:
                runs = st.runs(limit=1)
                checkpoint = st.checkpoint
            last = runs[0] if runs else None
        rows.append({
            "name": name,
            "last_run": None if last is None else {**_run_row(last), "outcome": outcome_word(last["exit_code"])},
            "checkpoint": checkpoint.updated_at.isoformat() if checkpoint else None,
        })
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo(f"no instances in {config_dir}")
    for row in rows:
        run = row["last_run"]
        if run is None:
            click.echo(f"{row['name']}: never run")
            continue
        where = f", checkpoint {row['checkpoint']}" if row["checkpoint"] else ""
        click.echo(f"{row['name']}: last run {run['started']} ({run['mode']}) -> {run['outcome']}{where}")


def _run_row(run: dict[str, Any]) -> dict[str, Any]:
    """A run history row for JSON output: what it did, with the counts of its report summary."""
    return {key: run.get(key) for key in ("run_id", "started", "finished", "mode", "exit_code", "summary")}


@cli.group()
def state() -> None:
    """Show or reset an instance's state (checkpoint, holdings, dead letters, runs)."""


@state.command("show")
@config_option
@name_option
@click.option("--runs", "run_count", type=click.IntRange(1), default=5, show_default=True, help="How many recent runs to show.")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON, with each run's counts.")
def state_show(config_dir: Path, name: str | None, run_count: int, as_json: bool) -> None:
    """Show the checkpoint, what each sink holds, dead letters and recent runs."""
    instance = resolve_name(config_dir, name)
    with open_state(config_dir, instance) as st:
        checkpoint = st.checkpoint
        if as_json:
            data = {
                "instance": instance,
                "checkpoint": {"updated_at": checkpoint.updated_at.isoformat(), "source_id": checkpoint.source_id} if checkpoint else None,
                "last_reconcile": st.last_reconcile.isoformat() if st.last_reconcile else None,
                "holdings": st.count_holdings(),
                "dead_letters": st.count_dead_letters(),
                "runs": [{**_run_row(run), "outcome": outcome_word(run["exit_code"])} for run in st.runs(limit=run_count)],
            }
            click.echo(json.dumps(data, indent=2, default=str))
            return
        click.echo(f"instance: {instance}")
        click.echo(f"checkpoint: {checkpoint.updated_at.isoformat() + ' id ' + checkpoint.source_id if checkpoint else 'none (next run pulls everything)'}")
        click.echo(f"last reconcile: {st.last_reconcile.isoformat() if st.last_reconcile else 'never'}")
        for sink, count in sorted(st.count_holdings().items()):
            click.echo(f"holds: {sink}: {count} records")
        for sink, count in sorted(st.count_dead_letters().items()):
            click.echo(f"dead letters: {sink}: {count}")
        for run in st.runs(limit=run_count):
            code = run["exit_code"]
            ended = outcome_word(code) if code is None else f"exit {code} ({outcome_word(code)})"
            click.echo(f"run {run['run_id']}: {run['started']} {run['mode']} {ended}")


@state.command("reset")
@config_option
@name_option
@click.option("--sink", default=None, help="Forget only what this sink holds (it gets everything again).")
@click.option("--checkpoint-only", is_flag=True, help="Forget only the checkpoint (the next run pulls everything; unchanged records are not re-sent).")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def state_reset(config_dir: Path, name: str | None, sink: str | None, checkpoint_only: bool, yes: bool) -> None:
    """Forget state so the next run starts over. Takes the instance lock."""
    instance = resolve_name(config_dir, name)
    with open_state(config_dir, instance) as st:
        check_sink_name(config_dir, instance, st, sink)
    what = "the checkpoint" if checkpoint_only else f"what sink {sink} holds" if sink else "the checkpoint, holdings, sink stores and dead letters"
    if not yes:
        click.confirm(f"Forget {what} of instance {instance}?", abort=True)
    with instance_lock(config_dir, instance), open_state(config_dir, instance) as st:
        st.reset(sink=sink, checkpoint_only=checkpoint_only)
    click.echo(f"forgot {what} of {instance}")


@cli.group()
def dlq() -> None:
    """Dead letters: records a sink rejected (or the source could not read), with the reason."""


@dlq.command("show")
@config_option
@name_option
@click.option("--sink", default=None, help=f"Only this sink's ('{SOURCE_SINK}' for the source's).")
@click.option("--limit", type=click.IntRange(1), default=50, show_default=True, help="Show at most this many.")
@click.option("--all", "show_all", is_flag=True, help="Show every dead letter.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per dead letter.")
def dlq_show(config_dir: Path, name: str | None, sink: str | None, limit: int, show_all: bool, as_json: bool) -> None:
    """Show dead letters with their reasons (the oldest first)."""
    instance = resolve_name(config_dir, name)
    with open_state(config_dir, instance) as st:
        check_sink_name(config_dir, instance, st, sink, also=(SOURCE_SINK,))
        counts = st.count_dead_letters()
        total = counts.get(sink, 0) if sink is not None else sum(counts.values())
        letters = st.dead_letters(sink, limit=None if show_all else limit)
    for letter in letters:
        if as_json:
            click.echo(json.dumps({"id": letter.id, "sink": letter.sink, "source_id": letter.source_id, "reason": letter.reason, "attempts": letter.attempts, "record": letter.record}))
        else:
            click.echo(f"#{letter.id} {letter.sink} {letter.source_id or '-'} (x{letter.attempts}, run {letter.run_id}): {letter.reason}")
    if not letters and not as_json:
        click.echo("no dead letters")
    elif len(letters) < total:
        # On stderr, so that --json output stays one object per line.
        click.echo(f"showing {len(letters)} of {total} dead letters (--limit N or --all for more)", err=as_json)


@dlq.command("replay")
@config_option
@name_option
@click.option("--sink", default=None, help="Only this sink's dead letters.")
@click.option("-v", "--verbosity", type=click.IntRange(1, 3), default=1)
def dlq_replay(config_dir: Path, name: str | None, sink: str | None, verbosity: int) -> None:
    """Send dead-lettered records to their sink again (after fixing the cause).

    Accepted records leave the queue; rejected ones stay with the new reason.
    Source dead letters cannot be replayed: fix them in ThreatQ and the next run pulls them.
    """
    instance = resolve_name(config_dir, name)
    with open_state(config_dir, instance) as st:
        check_sink_name(config_dir, instance, st, sink)
    config, registry = load(config_dir, instance)
    report = replay_dead_letters(config, registry, sink=sink)
    click.echo(report.summary_text(), err=True)
    sys.exit(report.exit_code)


@dlq.command("clear")
@config_option
@name_option
@click.option("--sink", default=None, help="Only this sink's dead letters.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def dlq_clear(config_dir: Path, name: str | None, sink: str | None, yes: bool) -> None:
    """Drop dead letters without replaying them."""
    instance = resolve_name(config_dir, name)
    with open_state(config_dir, instance) as st:
        check_sink_name(config_dir, instance, st, sink, also=(SOURCE_SINK,))
    if not yes:
        click.confirm(f"Drop the dead letters of {instance}{' for ' + sink if sink else ''}?", abort=True)
    with open_state(config_dir, instance) as st:
        letters = st.dead_letters(sink)
        st.remove_dead_letters(letter.id for letter in letters)
    click.echo(f"dropped {len(letters)} dead letters")
