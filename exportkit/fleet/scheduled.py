"""Which instances of a config folder have a ``[schedule]``, read without loading any plugin.

Beat and ``exportkit fleet status`` need only the ``[schedule]`` table; a
sink plugin missing on the beat host, or a problem elsewhere in a config,
must not stop the other instances from being scheduled. An instance whose
``[schedule]`` is wrong is left out with a warning naming the problem.
"""

from __future__ import annotations

import logging
from pathlib import Path

from exportkit.config import config_path, list_instances, read_toml
from exportkit.errors import ConfigError
from exportkit.fleet.schedule import Schedule
from exportkit.fleet.settings import ScheduleSettings
from exportkit.settings import parse_settings

__all__ = ["scheduled_instances", "instance_schedule"]


def instance_schedule(config_dir: Path, name: str) -> Schedule | None:
    """The schedule of instance ``name``, or ``None`` when it has none.

    :raises ConfigError: the config cannot be read or its ``[schedule]`` is wrong.
    """
    path = config_path(config_dir, name)
    table = read_toml(path).get("schedule")
    if table is None:
        return None
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: schedule must be a table ([schedule])")
    settings, problems = parse_settings(ScheduleSettings, table, file=str(path), section="schedule")
    if problems or settings is None:
        raise ConfigError(f"{path}: [schedule] is not valid", problems)
    return settings.schedule


def scheduled_instances(config_dir: Path, *, log: logging.Logger | None = None) -> dict[str, Schedule]:
    """Instance name -> schedule, for every instance in ``config_dir`` with a valid ``[schedule]``."""
    out: dict[str, Schedule] = {}
    for name in list_instances(config_dir):
        try:
            schedule = instance_schedule(config_dir, name)
        except ConfigError as exc:
            (log or logging.getLogger("exportkit.fleet")).warning("%s: not scheduled: %s", name, exc)
            continue
        if schedule is not None:
            out[name] = schedule
    return out
