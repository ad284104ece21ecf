"""``exportkit demo``: the main job against loopback emulators (what ``make demo`` runs)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from exportkit.cli import cli
from exportkit.cli.commands_run import ProgressLine

__all__ = ["demo"]


@cli.command()
@click.option("--indicators", type=click.IntRange(10, 200_000), default=3000, show_default=True, help="Size of the emulated ThreatQ data set.")
@click.option("--seed", type=int, default=7, show_default=True, help="Seed of the data set.")
@click.option("--dir", "folder", type=click.Path(file_okay=False, path_type=Path), default=None, help="Config folder to write (default: a new temporary one).")
@click.option("--keep", is_flag=True, help="Keep the emulators running and print the command to try by hand.")
def demo(indicators: int, seed: int, folder: Path | None, keep: bool) -> None:
    """Export an emulated ThreatQ collection to an emulated CTIA, twice, and show what happened.

    \b
    Example:
      exportkit demo
      exportkit demo --keep --dir ./demo
    """
    from exportkit.demo import run_demo

    progress = ProgressLine(sys.stderr.isatty())
    sys.exit(run_demo(indicators=indicators, seed=seed, folder=folder, keep=keep, echo=click.echo, progress=progress))
