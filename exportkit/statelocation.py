"""Where an instance's state and lock live: the SQLite file beside its config, or PostgreSQL.

The choice, in order: ``[state] url`` in the instance config (a secret: a
literal, ``env:NAME`` or ``file:PATH``), else the fleet-wide
``EXPORTKIT_STATE_URL``, else SQLite (``<config dir>/<instance>.state.sqlite``
with a ``flock`` on ``<instance>.lock``). With PostgreSQL the lock is a
session advisory lock in the same database (:mod:`exportkit.postgres.lock`).

Two guards keep an instance from silently starting over, which would send
everything again:

* SQLite state that ``exportkit state migrate`` moved to PostgreSQL is
  refused while the config still points at SQLite;
* PostgreSQL state that is still empty for an instance is refused while a
  SQLite file beside the config holds that instance's state (move it first).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, ContextManager, Mapping

from exportkit.config import config_path, read_toml
from exportkit.errors import ExportkitError
from exportkit.lock import InstanceLock, lock_path
from exportkit.secrets import SecretReferenceError, resolve

if TYPE_CHECKING:
    from exportkit.statestore import StateStore

__all__ = ["STATE_URL_VARIABLE", "MOVED_TO_KEY", "state_url", "instance_lock", "open_backend", "describe_location"]

#: the environment variable with the fleet-wide PostgreSQL state URL
STATE_URL_VARIABLE = "EXPORTKIT_STATE_URL"
#: the SQLite meta key ``state migrate`` leaves behind: where the state went, and when
MOVED_TO_KEY = "moved_to"


def state_url(config_dir: Path, name: str, *, environ: Mapping[str, str] | None = None) -> str | None:
    """The PostgreSQL URL of instance ``name``'s state, or ``None`` for SQLite.

    :raises ExportkitError: ``[state] url`` names a variable or file that cannot be read.
    """
    env = os.environ if environ is None else environ
    path = config_path(config_dir, name)
    table: Any = read_toml(path).get("state") if path.exists() else None
    value = table.get("url") if isinstance(table, dict) else None
    if isinstance(value, str) and value:
        try:
            return resolve(value, environ=env, base_dir=path.parent).reveal()
        except SecretReferenceError as exc:
            raise ExportkitError(f"{path}: state.url: {exc}") from None
    fleet = env.get(STATE_URL_VARIABLE, "").strip()
    return fleet or None


def describe_location(config_dir: Path, name: str, url: str | None) -> str:
    """Where the state is, for people: a file path or a database URL without its password."""
    if url:
        from exportkit.postgres.connect import display_url

        return display_url(url)
    from exportkit.state import state_path

    return str(state_path(config_dir, name))


def instance_lock(config_dir: Path, name: str, *, url: str | None = None, environ: Mapping[str, str] | None = None) -> ContextManager[Any]:
    """The lock of instance ``name``: a PostgreSQL advisory lock with PostgreSQL state, else ``flock``.

    :param url: the state URL when the caller has it (default: :func:`state_url`).
    """
    url = url if url is not None else state_url(config_dir, name, environ=environ)
    if url:
        from exportkit.postgres.lock import AdvisoryLock

        return AdvisoryLock(url, name)
    return InstanceLock(lock_path(config_dir, name), name)


def open_backend(config_dir: Path, name: str, *, url: str | None = None, environ: Mapping[str, str] | None = None) -> StateStore:
    """Open instance ``name``'s state where :func:`state_url` says it is (see the guards above).

    :raises StateVersionError: a newer release wrote it.
    :raises ExportkitError: a guard refused, or PostgreSQL cannot be reached.
    """
    from exportkit.state import State, state_path

    url = url if url is not None else state_url(config_dir, name, environ=environ)
    local = state_path(config_dir, name)
    if url:
        from exportkit.postgres.state import PgState

        pg = PgState.open(url, name)
        try:
            if local.exists() and not pg.has_state():
                _refuse_unmoved_sqlite(local, name, pg.where)
        except BaseException:
            pg.close()
            raise
        return pg
    state_sqlite = State.open(local)
    moved = state_sqlite.get_meta(MOVED_TO_KEY)
    if moved:
        state_sqlite.close()
        raise ExportkitError(
            f"the state of instance {name!r} was moved to PostgreSQL ({moved}); set [state] url in its config "
            f"or {STATE_URL_VARIABLE} to use it there. {local} is only a backup now."
        )
    return state_sqlite


def _refuse_unmoved_sqlite(local: Path, name: str, where: str) -> None:
    from exportkit.state import State

    with State.open(local) as old:
        moved = old.get_meta(MOVED_TO_KEY)
        has_state = old.checkpoint is not None or bool(old.count_holdings()) or bool(old.count_dead_letters())
    if has_state and not moved:
        raise ExportkitError(
            f"instance {name!r} keeps its state in {local}, and {where} has none for it yet: starting afresh "
            f"there would send everything again. Move it first: exportkit state migrate -n {name} --to URL "
            f"(or delete {local} to start afresh on purpose)"
        )
