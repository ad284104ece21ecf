"""The one interface every state backend implements, and the function that opens an instance's state.

The engine, replay, checks and the CLI use only :class:`StateStore`. Its
implementations are :class:`exportkit.state.State` (SQLite beside the
config, the default) and :class:`exportkit.postgres.state.PgState`
(``[state] url`` or ``EXPORTKIT_STATE_URL``); :func:`open_state` chooses
(:mod:`exportkit.statelocation`), and :func:`instance_lock` gives the lock
that goes with it. A backend must:

* keep a schema version and migrate forward in one transaction on open,
  refusing a newer schema with :class:`~exportkit.errors.StateVersionError`;
* make :meth:`StateStore.transaction` atomic (holdings, dead letters and the
  checkpoint of a batch commit together) and nestable;
* keep sink-store ``set``/``delete`` pending until :meth:`StateStore.flush_sink_stores`
  (called inside the batch's transaction), and commit ``set_durable`` at once;
* be usable from the sink threads (reads, sink stores) while the engine writes.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ContextManager, Iterable, Protocol

if TYPE_CHECKING:
    from exportkit.context import HoldingsView, KeyValueStore
    from exportkit.state import Checkpoint, DeadLetter

__all__ = ["StateStore", "open_state", "instance_lock"]


class StateStore(Protocol):
    """An open instance state (see the module docstring for what a backend guarantees)."""

    def close(self) -> None:
        """Release the connection."""

    def __enter__(self) -> StateStore: ...

    def __exit__(self, *exc: object) -> None: ...

    def transaction(self) -> ContextManager[None]:
        """Group writes into one commit; rolled back if the block raises; inner blocks join the outer."""

    @property
    def checkpoint(self) -> Checkpoint | None:
        """Where the next incremental pull starts."""

    def set_checkpoint(self, checkpoint: Checkpoint | None) -> None: ...

    @property
    def last_reconcile(self) -> datetime | None:
        """When the last complete reconcile pass ran."""

    def set_last_reconcile(self, when: datetime) -> None: ...

    def holdings(self, sink: str) -> HoldingsView:
        """Read access to what ``sink`` holds."""

    def put_holdings(self, sink: str, rows: Iterable[tuple[str, str, Any]]) -> None:
        """Remember ``(source_id, content_hash, remote)`` rows for ``sink``."""

    def drop_holdings(self, sink: str, source_ids: Iterable[str]) -> None: ...

    def held_ids(self, sink: str) -> set[str]: ...

    def holds_any(self, sink: str) -> bool:
        """Whether ``sink`` holds anything (one indexed look-up, whatever the size)."""

    def count_holdings(self) -> dict[str, int]: ...

    def store(self, sink: str) -> KeyValueStore:
        """The private key-value store of ``sink``; ``set``/``delete`` wait for :meth:`flush_sink_stores`."""

    def flush_sink_stores(self) -> None:
        """Write the sink stores' pending writes, inside the batch's transaction."""

    def discard_sink_stores(self) -> None:
        """Drop the sink stores' pending writes (their batch did not commit)."""

    def add_dead_letters(self, sink: str, rows: Iterable[tuple[str | None, str, Any]], run_id: str) -> int:
        """Dead-letter ``(source_id, reason, record)`` rows; returns how many are new."""

    def dead_letters(self, sink: str | None = None, limit: int | None = None) -> list[DeadLetter]: ...

    def remove_dead_letters(self, ids: Iterable[int]) -> None: ...

    def clear_dead_letter(self, sink: str, source_ids: Iterable[str]) -> None: ...

    def count_dead_letters(self) -> dict[str, int]: ...

    def start_run(self, run_id: str, mode: str) -> None: ...

    def finish_run(self, run_id: str, exit_code: int, summary: dict[str, Any]) -> None: ...

    def runs(self, limit: int = 10) -> list[dict[str, Any]]: ...

    def reset(self, *, sink: str | None = None, checkpoint_only: bool = False) -> None: ...


def open_state(config_dir: Path, name: str) -> StateStore:
    """Open (creating and migrating as needed) the state of instance ``name``, where its config says.

    :raises StateVersionError: a newer release wrote it.
    :raises ExportkitError: PostgreSQL cannot be reached, or the state is not where the config says
        (see :func:`exportkit.statelocation.open_backend`).
    """
    from exportkit.statelocation import open_backend

    state: StateStore = open_backend(config_dir, name)
    return state


def instance_lock(config_dir: Path, name: str) -> ContextManager[Any]:
    """The lock that keeps two runs of instance ``name`` apart: ``flock`` with SQLite, an advisory lock with PostgreSQL.

    Entering it raises :class:`~exportkit.errors.LockedError` (exit 4) when another run holds it.
    """
    from exportkit.statelocation import instance_lock as choose

    return choose(config_dir, name)
