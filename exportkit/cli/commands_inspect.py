"""Commands that look at instances without exporting: check, plugins, instances, state, dlq."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from exportkit.cli import cli
from exportkit.cli.common import check_sink_name, config_option, load, name_option, open_state, resolve_name
from exportkit.config import list_instances
from exportkit.escape import visible
from exportkit.checks import check_instance
from exportkit.errors import ConfigError, ExportkitError
from exportkit.lock import InstanceLock, lock_path
from exportkit.plugins import discover, sink_hooks
from exportkit.replay import replay_dead_letters
from exportkit.state import SOURCE_SINK, State, state_path

__all__ = ["check", "plugins", "instances", "state", "dlq"]


@cli.command()
@config_option
@name_option
def check(config_dir: Path, name: str | None) -> None:
    """Check an instance: config, plugins, and each endpoint's reachability and credentials.

    Sends nothing and changes no state. Exit 0 when every check passed, 1 otherwise.

    \b
    Example:
      exportkit check -n prod -c /etc/exportkit
    """
    instance = resolve_name(config_dir, name)
    registry = discover()
    try:
        config, _ = load(config_dir, instance, registry)
    except ConfigError as exc:
        click.echo(f"FAIL config: {exc}", err=True)
        sys.exit(1)
    click.echo(f"ok   config {config.path}")
    for warning in config.warnings:
        click.echo(f"WARN config: {visible(warning)}")
    for sink in config.sinks:
        origin = registry.origin(config.sink_type_of(sink))
        click.echo(f"ok   plugin {sink}: {origin.distribution if origin else '?'} {origin.version if origin else ''}".rstrip())
    results = check_instance(config, registry)
    failed = False
    for part, ok, lines in results:
        failed = failed or not ok
        head = "ok  " if ok else "FAIL"
        click.echo(f"{head} {part}: {visible(lines[0]) if lines else ''}")
        for line in lines[1:]:
            click.echo(f"       {visible(line)}")
    sys.exit(1 if failed else 0)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def plugins(as_json: bool) -> None:
    """List installed sink plugins (distribution, version, hooks) and any that failed to load.

    Exit 1 when a plugin failed to load.
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
                    "hooks": list(p.hooks),
                    "sink_hooks": {s.name: list(sink_hooks(s)) for s in p.sink_types},
                }
                for p in registry.loaded
            ],
            "failed": [{"name": f.name, "distribution": f.distribution, "version": f.version, "error": f.error} for f in registry.failed],
        }
        click.echo(json.dumps(data, indent=2))
        sys.exit(1 if registry.failed else 0)
    for plugin in registry.loaded:
        sinks = ", ".join(s.name for s in plugin.sink_types) or "(no sinks)"
        click.echo(f"{plugin.name}  {plugin.distribution or '-'} {plugin.version or ''}  sinks: {sinks}")
        click.echo(f"    plugin hooks: {', '.join(plugin.hooks)}")
        for sink_type in plugin.sink_types:
            click.echo(f"    sink {sink_type.name}: {sink_type.description or '(no description)'}")
            hooks = sink_hooks(sink_type)
            if hooks:
                click.echo(f"      hooks: {', '.join(hooks)}")
    for failed in registry.failed:
        click.echo(f"{failed.name}  {failed.distribution or '-'} {failed.version or ''}  FAILED TO LOAD: {failed.error}")
        click.echo("    fix or uninstall that distribution, or skip it with EXPORTKIT_DISABLE_PLUGINS=" + failed.name)
    for name, why in registry.unavailable.items():
        if name not in {f.name for f in registry.failed}:
            click.echo(f"sink {name}: unusable: {why}")
    if not registry.loaded and not registry.failed:
        click.echo(
            "no plugins installed: install the sinks from a source tree "
            "(pip install ./plugins/stdout ./plugins/ctia) or from their wheels "
            "(pip install exportkit_ctia-*.whl); they are not published on the package index"
        )
    if registry.failed:  # scripts and monitoring notice a broken plugin
        sys.exit(1)


def outcome_word(exit_code: int | None) -> str:
    """How a run ended, in a word (``None``: it never recorded an end)."""
    if exit_code is None:
        return "running or interrupted"
    return {0: "ok", 1: "failed", 2: "usage error", 3: "partial", 4: "locked"}.get(exit_code, f"exit {exit_code}")


@cli.command()
@config_option
def instances(config_dir: Path) -> None:
    """List the instances in a config folder with their last run and its result."""
    if not config_dir.is_dir():
        raise ExportkitError(f"config folder {config_dir} does not exist (pass the folder with -c or set EXPORTKIT_CONFIG)")
    names = list_instances(config_dir)
    if not names:
        click.echo(f"no instances in {config_dir}")
        return
    for name in names:
        path = state_path(config_dir, name)
        if not path.exists():
            click.echo(f"{name}: never run")
            continue
        with State.open(path) as st:
            runs = st.runs(limit=1)
            checkpoint = st.checkpoint
        if not runs:
            click.echo(f"{name}: never run")
            continue
        last = runs[0]
        result = outcome_word(last["exit_code"])
        where = f", checkpoint {checkpoint.updated_at.isoformat()}" if checkpoint else ""
        click.echo(f"{name}: last run {last['started']} ({last['mode']}) -> {result}{where}")


@cli.group()
def state() -> None:
    """Show or reset an instance's state (checkpoint, holdings, dead letters, runs)."""


@state.command("show")
@config_option
@name_option
def state_show(config_dir: Path, name: str | None) -> None:
    """Show the checkpoint, what each sink holds, dead letters and recent runs."""
    instance = resolve_name(config_dir, name)
    with open_state(config_dir, instance) as st:
        checkpoint = st.checkpoint
        click.echo(f"instance: {instance}")
        click.echo(f"checkpoint: {checkpoint.updated_at.isoformat() + ' id ' + checkpoint.source_id if checkpoint else 'none (next run pulls everything)'}")
        click.echo(f"last reconcile: {st.last_reconcile.isoformat() if st.last_reconcile else 'never'}")
        for sink, count in sorted(st.count_holdings().items()):
            click.echo(f"holds: {sink}: {count} records")
        for sink, count in sorted(st.count_dead_letters().items()):
            click.echo(f"dead letters: {sink}: {count}")
        for run in st.runs(limit=5):
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
    with InstanceLock(lock_path(config_dir, instance), instance), open_state(config_dir, instance) as st:
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
